"""What a localization run's results say: per-group drops, the localized verdict, automatic K.

Rows are intervention results (dicts with concept, category, kind, k, draw, blocks, presence, scores,
other); report.py draws and writes what this module computes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dit_jax.verdict import exact, stats, sets
from dit_jax.blocks import rank_blocks


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


KINDS_AT_K = ("top", "random", "depth_random", "bottom", "reverse", "reverse_random")
CONTROLS = ("random", "depth_random")   # the kinds top-K is tested against, unit by unit


def groups_at_k(rows: Sequence[dict], by: str = "category"):
  """(group, its rows, K, kind -> its rows at K) for every group (category or concept) and every
  K its top-K rows swept, in the rows' order."""
  for group in dict.fromkeys(r[by] for r in rows):
    members = [r for r in rows if r[by] == group]
    for k in sorted({r["k"] for r in members if r["kind"] == "top"}):
      yield group, members, k, {kind: [r for r in members if r["kind"] == kind and r["k"] == k]
                                for kind in KINDS_AT_K}


def summarize(rows: Sequence[dict], by: str = "category") -> list[dict]:
  """One entry per group (category, or concept with by="concept") and top-K K.

  Drops are per concept (its K=0 presence minus the intervened presence; random-K: over its draws
  first), then averaged. Intervals and p-values come from the (prompt, seed) units of the group's
  concepts, pooled (unit_statistics): *_interval is the 95% bootstrap interval, top_minus_<control>
  the paired difference of drops, p_<control> the paired sign-flip permutation test over units and
  p_<control>_draws the draw-level p; <control> is "random" (random-K) or "depth" (depth-matched
  random-K); these unit-level tests are secondary. other_drop: the other categories' accuracy drop
  under top-K (None without data). tests: dit_jax/verdict/sets.py's set-level tests (removal,
  sufficiency, presence floor, specificity); removable, sufficient, localized and the adjusted
  p-values: sets.decide over every entry (sets.RULE). top_over_random is information only.
  The reverse experiment (the concept only in the selected blocks) comes with its controls: the
  same for random-K draws, and the neutral prompt everywhere.
  """
  if by not in ("category", "concept"):
    raise ValueError(f"by={by!r}: use 'category' or 'concept'")
  original = {r["concept"]: r for r in rows if r["kind"] == "none"}
  neutral = {r["concept"]: r for r in rows if r["kind"] == "neutral"}
  entries = []
  for group, members, k, at_k in groups_at_k(rows, by):
    drop = lambda r: original[r["concept"]]["presence"] - r["presence"]
    drops = {kind: concept_mean([r for r in at_k[kind] if r["concept"] in original], drop)
             for kind in ("top", "random", "depth_random", "bottom")}
    other = mean_or_none([original[r["concept"]]["other"][cat] - acc
                   for r in at_k["top"] if r["concept"] in original
                   for cat, acc in r.get("other", {}).items()
                   if cat in original[r["concept"]].get("other", {})])
    base = entry_original(original, members)
    units = unit_statistics(original, at_k)
    presence = lambda r: r["presence"]
    entries.append({
        by: group, "category": members[0]["category"], "k": k,
        "concepts": len({r["concept"] for r in at_k["top"]}),
        "units": units["units"],
        "original": base, "original_interval": units["original_interval"],
        "top_drop": drops["top"], "top_drop_interval": units["top_drop_interval"],
        "random_drop": drops["random"], "random_drop_interval": units["random"]["drop_interval"],
        "random_draws": len({r["draw"] for r in at_k["random"]}),
        "random_overlap": _overlap(at_k["random"]),
        "top_minus_random": units["random"]["difference"],
        "top_minus_random_interval": units["random"]["difference_interval"],
        "p_random": units["random"]["p"], "p_random_draws": units["random"]["p_draws"],
        "depth_drop": drops["depth_random"],
        "depth_drop_interval": units["depth_random"]["drop_interval"],
        "depth_draws": len({r["draw"] for r in at_k["depth_random"]}),
        "depth_overlap": _shares_blocks(at_k["depth_random"], at_k["top"]),
        "top_minus_depth": units["depth_random"]["difference"],
        "top_minus_depth_interval": units["depth_random"]["difference_interval"],
        "p_depth": units["depth_random"]["p"], "p_depth_draws": units["depth_random"]["p_draws"],
        "bottom_drop": drops["bottom"],
        "reverse_presence": concept_mean(at_k["reverse"], presence),
        "reverse_random_presence": concept_mean(at_k["reverse_random"], presence),
        "reverse_random_draws": len({r["draw"] for r in at_k["reverse_random"]}),
        "neutral_presence": concept_mean([r for r in members if r["kind"] == "neutral"], presence),
        "other_drop": other,
        "top_over_random": _ratio(drops["top"], drops["random"]),
        "tests": sets.group_tests(original, neutral, at_k)})
  sets.decide(entries)
  found = exact.decide(rows)   # runs that swept every K-set (or a sample without replacement)
  if found is not None:
    exact.apply(entries, found, by)
  return entries


def unit_statistics(original: dict, at_k: dict) -> dict:
  """Intervals and tests over the (prompt, seed) units of the concepts at one K, pooled.

  original: concept -> its K=0 row; at_k: kind -> rows. A unit is one image (a row's `scores`,
  prompt-major), paired across the interventions of its concept since all start from the same
  noise. A concept counts where its K=0 and top-K rows both have per-image scores; a control
  (random-K, depth-matched) uses the draws every counted concept has. Values are None without
  data (rows written before per-image scores were kept).
  """
  scores = lambda r: np.asarray(r.get("scores") or [], float)
  top = {r["concept"]: scores(r) for r in at_k["top"]}
  counted = [c for c in top if c in original and top[c].size
             and scores(original[c]).shape == top[c].shape]
  empty = {"drop": None, "drop_interval": None, "difference": None, "difference_interval": None,
           "p": None, "p_draws": None}
  result = {"units": 0, "original_interval": None, "top_drop_interval": None,
            **{kind: empty for kind in CONTROLS}}
  if not counted:
    return result
  base = np.concatenate([scores(original[c]) for c in counted])
  top_drops = base - np.concatenate([top[c] for c in counted])
  result.update(units=int(base.size), original_interval=_listed(stats.presence_interval(base)),
                top_drop_interval=_listed(stats.bootstrap_interval(top_drops)))
  for kind in CONTROLS:
    draws: dict[str, dict[int, np.ndarray]] = {}
    for r in at_k[kind]:
      if r["concept"] in counted and scores(r).shape == top[r["concept"]].shape:
        draws.setdefault(r["concept"], {})[r["draw"]] = scores(r)
    shared = sorted(set.intersection(*(set(draws.get(c, {})) for c in counted)))
    if shared:
      control = np.stack([base - np.concatenate([draws[c][d] for c in counted]) for d in shared])
      compared = stats.compare(top_drops, control)
      result[kind] = {key: _listed(value) for key, value in compared.items()}
  return result


def _listed(value):
  """Intervals as lists, as JSON gives them back (summary.json round-trips)."""
  return list(value) if isinstance(value, tuple) else value


def _overlap(random_rows: Sequence[dict]) -> bool | None:
  """Whether the random-K draws could share blocks with the top-K (None: not recorded)."""
  values = {r.get("random_overlap") for r in random_rows} - {None}
  return values.pop() if len(values) == 1 else None


def _shares_blocks(draw_rows: Sequence[dict], top_rows: Sequence[dict]) -> bool | None:
  """Whether any draw shares a block with its concept's top-K (None without draws)."""
  if not draw_rows:
    return None
  top = {r["concept"]: set(r["blocks"]) for r in top_rows}
  return any(top.get(r["concept"], set()) & set(r["blocks"]) for r in draw_rows)


def _ratio(top: float | None, random: float | None) -> float | None:
  """top / random drop; None where undefined (no data, or random-K did not lower presence) or
  meaningless (a top-K drop below MIN_TOP_DROP: a ratio of two noise-sized drops)."""
  if top is None or random is None or random <= 0 or top < MIN_TOP_DROP:
    return None
  return top / random


# top/random is information only: a ratio of two drops of a few hundredths is noise, shown as "-".
MIN_TOP_DROP = 0.05


def entry_original(original: dict, members: Sequence[dict]) -> float | None:
  return mean_or_none([original[c]["presence"] for c in {r["concept"] for r in members} if c in original])


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
