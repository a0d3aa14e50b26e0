"""What a localization run's results say: per-group drops, the localized verdict, automatic K.

Rows are intervention results (dicts with concept, category, kind, k, draw, blocks, presence,
other); report.py draws and writes what this module computes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dit_jax.localization import rank_blocks


def block_ranks(block_scores: Sequence[float]) -> np.ndarray:
  """Rank of every block, 1 = largest score; ties keep block order (localization.rank_blocks)."""
  order = rank_blocks(np.asarray(block_scores, float))
  ranks = np.empty(len(order), int)
  ranks[order] = np.arange(1, len(order) + 1)
  return ranks


def select_rows(rows: Sequence[dict], concept_or_category: str) -> list[dict]:
  """The rows of a concept, or else of every concept of a category."""
  chosen = [r for r in rows if r["concept"] == concept_or_category]
  chosen = chosen or [r for r in rows if r["category"] == concept_or_category]
  if not chosen:
    raise KeyError(f"no rows for a concept or category named {concept_or_category!r}")
  return chosen


def mean_or_none(values: Sequence[float]) -> float | None:
  return float(np.mean(values)) if len(values) else None


def presence_by_k(rows: Sequence[dict], kind: str) -> dict[int, float]:
  """Mean presence of one kind at each K (over concepts and draws), K ascending."""
  ks = sorted({r["k"] for r in rows if r["kind"] == kind})
  return {k: mean_or_none([r["presence"] for r in rows if r["kind"] == kind and r["k"] == k]) for k in ks}


def random_band(rows: Sequence[dict], k: int) -> tuple[float, float]:
  """(min, max) over random draws of the presence, each draw first averaged over concepts."""
  draws = {}
  for r in rows:
    if r["kind"] == "random" and r["k"] == k:
      draws.setdefault(r["draw"], []).append(r["presence"])
  per_draw = [np.mean(v) for v in draws.values()]
  return float(np.min(per_draw)), float(np.max(per_draw))


def other_accuracy_by_k(rows: Sequence[dict]) -> dict[int, float]:
  """Mean accuracy on the other categories, K=0 (original) then each top-K; empty without data."""
  by_k: dict[int, list[float]] = {}
  for r in rows:
    if r["kind"] in ("none", "top") and r.get("other"):
      by_k.setdefault(r["k"] if r["kind"] == "top" else 0, []).extend(r["other"].values())
  return {k: float(np.mean(by_k[k])) for k in sorted(by_k)}


def concept_mean(rows: Sequence[dict], value) -> float | None:
  """value(row) averaged over each concept's rows (its draws), then over concepts, so a concept
  with more draws does not weigh more."""
  per_concept: dict[str, list[float]] = {}
  for r in rows:
    per_concept.setdefault(r["concept"], []).append(value(r))
  return mean_or_none([float(np.mean(v)) for v in per_concept.values()])


KINDS_AT_K = ("top", "random", "bottom", "reverse", "reverse_random")


def summarize(rows: Sequence[dict], by: str = "category") -> list[dict]:
  """One entry per group (category, or concept with by="concept") and top-K K.

  Drops are per concept (its K=0 presence minus the intervened presence; random-K: over its draws
  first), then averaged. other_drop: the same for the other categories' accuracy under top-K (None
  without data, and then the verdict rests on the own-category half alone). localized: top-K lowers
  its own category >= 2x more than random-K, and the other categories less than half as much as its
  own; None without random-K rows. The reverse experiment (the concept only in the selected blocks)
  comes with its controls: the same for random-K draws, and the neutral prompt everywhere.
  """
  if by not in ("category", "concept"):
    raise ValueError(f"by={by!r}: use 'category' or 'concept'")
  original = {r["concept"]: r for r in rows if r["kind"] == "none"}
  groups = list(dict.fromkeys(r[by] for r in rows))
  entries = []
  for group in groups:
    members = [r for r in rows if r[by] == group]
    for k in sorted({r["k"] for r in members if r["kind"] == "top"}):
      at_k = {kind: [r for r in members if r["kind"] == kind and r["k"] == k] for kind in KINDS_AT_K}
      drop = lambda r: original[r["concept"]]["presence"] - r["presence"]
      drops = {kind: concept_mean([r for r in at_k[kind] if r["concept"] in original], drop)
               for kind in ("top", "random", "bottom")}
      other = mean_or_none([original[r["concept"]]["other"][cat] - acc
                     for r in at_k["top"] if r["concept"] in original
                     for cat, acc in r.get("other", {}).items()
                     if cat in original[r["concept"]].get("other", {})])
      base = entry_original(original, members)
      presence = lambda r: r["presence"]
      entries.append({
          by: group, "k": k, "concepts": len({r["concept"] for r in at_k["top"]}),
          "original": base,
          "top_drop": drops["top"], "random_drop": drops["random"],
          "random_draws": len({r["draw"] for r in at_k["random"]}),
          "random_overlap": _overlap(at_k["random"]),
          "bottom_drop": drops["bottom"],
          "reverse_presence": concept_mean(at_k["reverse"], presence),
          "reverse_random_presence": concept_mean(at_k["reverse_random"], presence),
          "reverse_random_draws": len({r["draw"] for r in at_k["reverse_random"]}),
          "neutral_presence": concept_mean([r for r in members if r["kind"] == "neutral"], presence),
          "other_drop": other,
          "top_over_random": _ratio(drops["top"], drops["random"]),
          "localized": _localized(base, drops["top"], drops["random"], other)})
  return entries


def _overlap(random_rows: Sequence[dict]) -> bool | None:
  """Whether the random-K draws could share blocks with the top-K (None: not recorded)."""
  values = {r.get("random_overlap") for r in random_rows} - {None}
  return values.pop() if len(values) == 1 else None


def _ratio(top: float | None, random: float | None) -> float | None:
  """top / random drop; None where undefined (no data, or random-K did not lower presence) or
  meaningless (a top-K drop below MIN_TOP_DROP: a ratio of two noise-sized drops)."""
  if top is None or random is None or random <= 0 or top < MIN_TOP_DROP:
    return None
  return top / random


# Below these the verdict is noise: a concept the model does not show at K=0 has nothing to remove,
# and a drop of a few hundredths is within the judge's scatter on a handful of images.
MIN_ORIGINAL_PRESENCE = 0.2
MIN_TOP_DROP = 0.05


def entry_original(original: dict, members: Sequence[dict]) -> float | None:
  return mean_or_none([original[c]["presence"] for c in {r["concept"] for r in members} if c in original])


def _localized(original: float | None, top: float | None, random: float | None,
               other: float | None) -> bool | None:
  if top is None or random is None or original is None or original < MIN_ORIGINAL_PRESENCE:
    return None
  own = top >= MIN_TOP_DROP and top >= 2 * random
  return bool(own and (other is None or other < 0.5 * top))


AUTO_K_RULE = (
    "automatic K: the smallest swept K whose top-K presence (mean over the concepts) is below the "
    "target;\nno K between swept values was tested, so k_crossing, where the curve drawn straight "
    "between swept K (from the original at K=0) crosses the target, is given apart.")


def auto_k(rows: Sequence[dict], concept_or_category: str, target: float) -> int | None:
  """The smallest K whose top-K intervention brings mean presence below target; None if none does.

  Only intervened K count (K >= 1): a concept the judge already misses at K=0 still gets None or a K.
  """
  for k, presence in presence_by_k(select_rows(rows, concept_or_category), "top").items():
    if k > 0 and presence < target:
      return k
  return None


def read_k(rows: Sequence[dict], concept_or_category: str, target: float) -> dict:
  """K read off the top-K curve by AUTO_K_RULE: the swept K (auto_k) and the interpolated crossing
  (0.0 when the original is already below the target, None when the curve never crosses)."""
  chosen = select_rows(rows, concept_or_category)
  curve = {0: mean_or_none([r["presence"] for r in chosen if r["kind"] == "none"])}
  curve.update(presence_by_k(chosen, "top"))
  points = [(k, p) for k, p in curve.items() if p is not None]
  crossing = None
  if points and points[0][1] < target:
    crossing = float(points[0][0])
  for (k0, p0), (k1, p1) in zip(points, points[1:]):
    if crossing is None and p0 >= target > p1:
      crossing = k0 + (p0 - target) / (p0 - p1) * (k1 - k0)
  return {"k": auto_k(rows, concept_or_category, target), "k_crossing": crossing,
          "target": target, "swept": [k for k, _ in points], "presence": [p for _, p in points]}


# --------------------------------------------------------------------------------------------- images
