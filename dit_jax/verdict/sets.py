"""The localization verdict: is top-K unusual among K-block sets? (docs/design.md, "Verdict").

For a group (one concept, or a category's concepts combined) at one K:

- **removable here**: the group's statistic T is the mean over its concepts of top-K's drop
  (presence at K=0 minus presence with the neutral text in the top-K, mean over the concept's
  units). Its null is the distribution of K-block sets: draw r's statistic is the mean over the same
  concepts of the drop of each concept's r-th independent random K-set, on the same units. The
  set-level p is (1 + #{draws with a drop >= T}) / (R + 1): the rank of top-K among R + 1 sets.
  Where top-K is itself a random set (config.placebo) it is exchangeable with the draws, so p is
  uniform (ties count against top-K, which only raises it): the false-positive rate is at most the
  level, for any block effects and any image noise. The p-values of every (group, K) test of a run
  are adjusted by Benjamini-Hochberg (FDR 0.05; when no group carries knowledge, as under the
  placebo, that is also the chance of any false "yes"). Image noise enters through a hierarchical
  bootstrap (concepts, then prompts within a concept, then seeds within a prompt, each resampled
  with replacement): its 95% interval of T minus the mean draw must lie above 0 too, so the
  verdict survives other prompts and seeds, not only these images.
- **sufficient here**: the reverse experiment (the concept only in the top-K, the neutral prompt
  elsewhere) tested the same way: the gain over the neutral prompt everywhere, against the same
  gain in random K-sets (reverse_random).
- **presence floor**: the concept must be there to be removed: the original's presence above the
  neutral prompt's everywhere and above the judge's chance level (the lower ends of their bootstrap
  intervals), not a constant.
- **specific**: withholding the concept in the top-K must not disturb the rest of the image more
  than the neutral prompt everywhere does (per image: the judge's `context`, e.g. the other
  categories' accuracy): not specific where the interval of (neutral's context - top-K's) lies
  above 0.
- **localized** = presence floor and removable and specific; None where there is nothing to decide
  on (no draws, no per-image scores, or the floor fails: no concept to localize).

Which presence decides: the judge's probability per image (`scores`). The thresholded hits
(`unit_hits`, at the judge's threshold, calibrated on the neutral-prompt images where the judge
calibrates) are reported beside it with Wilson intervals (`hits`), but they do not decide: on a
handful of images most K-sets give the same hit count, and a rank test that counts ties against
top-K (as it must, to stay valid) then almost never rejects, whatever the blocks carry. The
chance level is the probability's too (one in the judge's classes).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dit_jax.verdict.stats import wilson

ALPHA = 0.05
BOOTSTRAP = 2000
SEED = 0          # fixed: a re-analysis of the same rows gives the same intervals

RULE = (
    "localized = presence floor and removable and specific. removable: top-K's drop ranks high among\n"
    "random K-block sets (set-level p = (1 + #{draws >= top}) / (R + 1), Benjamini-Hochberg over\n"
    f"the run's group x K tests, < {ALPHA}) and the hierarchical-bootstrap 95% interval of top minus\n"
    "the mean draw is above 0. sufficient: the same for the reverse experiment's gain over the\n"
    "neutral prompt. floor: the original's presence above the neutral prompt's and above chance.\n"
    "specific: top-K does not disturb the rest of the image significantly more than the neutral\n"
    "prompt everywhere. Under a placebo (random top-K) the false-positive rate is at most 0.05.")


def measure(row: dict) -> np.ndarray:
  """Per-image presence as the verdict counts it: the judge's probability (see the module's
  docstring for why not the thresholded hits)."""
  return np.asarray(row.get("scores") or [], float)


def hit_rates(rows: dict, counted: Sequence[str]) -> dict | None:
  """The share of images at or above the judge's calibrated threshold, with its Wilson interval
  (images taken as independent; the bootstrap intervals account for prompts), where the rows
  have per-image hits."""
  hits = [np.asarray(rows[c].get("unit_hits") or [], float) for c in counted]
  if not all(h.size for h in hits):
    return None
  joined = np.concatenate(hits)
  return {"rate": float(joined.mean()), "interval": wilson(float(joined.sum()), joined.size)}


def set_level_p(statistic: float, draws: np.ndarray) -> float:
  """(1 + #{draws >= statistic}) / (R + 1); a draw equal up to rounding counts against."""
  draws = np.asarray(draws, float)
  return float((1 + np.sum(draws >= statistic - 1e-12)) / (draws.size + 1))


def benjamini_hochberg(p_values: Sequence[float | None]) -> list[float | None]:
  """BH-adjusted p-values (None stays None and does not count as a test)."""
  tested = [(i, p) for i, p in enumerate(p_values) if p is not None]
  adjusted: list[float | None] = [None] * len(p_values)
  if not tested:
    return adjusted
  order = sorted(tested, key=lambda item: item[1])
  m, running = len(order), 1.0
  for rank in range(m, 0, -1):
    index, p = order[rank - 1]
    running = min(running, p * m / rank)
    adjusted[index] = float(running)
  return adjusted


def hierarchical_weights(sizes: Sequence[tuple[int, int]], resamples: int = BOOTSTRAP,
                         seed: int = SEED) -> np.ndarray:
  """(resamples, units) weights: resample concepts, then prompts within each, then seeds within
  each prompt, all with replacement; weights @ values is the mean over the resampled concepts of
  the mean over their resampled units. sizes: (prompts, seeds) per concept, units prompt-major."""
  rng = np.random.default_rng(seed)
  offsets = np.cumsum([0] + [p * s for p, s in sizes])
  total = int(offsets[-1])
  weights = np.zeros(resamples * total)
  picks = rng.integers(0, len(sizes), (resamples, len(sizes)))
  for slot in range(len(sizes)):
    for c, (prompts, seeds) in enumerate(sizes):
      rows = np.nonzero(picks[:, slot] == c)[0]
      chosen = rng.integers(0, prompts, (rows.size, prompts))
      within = rng.integers(0, seeds, (rows.size, prompts, seeds))
      units = offsets[c] + chosen[:, :, None] * seeds + within
      flat = (rows[:, None, None] * total + units).ravel()   # bincount: a fast scatter-add
      weights += np.bincount(flat, minlength=weights.size) / (len(sizes) * prompts * seeds)
  return weights.reshape(resamples, total)


def _interval(samples: np.ndarray) -> list[float]:
  low, high = np.percentile(samples, [2.5, 97.5])
  return [float(low), float(high)]


def set_test(effect: np.ndarray, draws: np.ndarray, weights: np.ndarray) -> dict:
  """top against the null of sets. effect: (units,) top-K's per-unit effect, concepts
  concatenated; draws: (R, units) the same for draw r of every concept; weights: row 0 the
  observed sample's (each concept 1 / concepts, shared by its units), the others the hierarchical
  bootstrap's resamples (hierarchical_weights)."""
  observed, null = effect @ weights[0], draws @ weights[0]
  # The mean over draws is linear in the weights: one product gives every resample's excess.
  excess = weights[1:] @ (effect - draws.mean(axis=0))
  return {"statistic": float(observed), "null_mean": float(null.mean()),
          "null_95": float(np.percentile(null, 95)), "draws": int(null.size),
          "beats": float(np.mean(null < observed - 1e-12)), "p": set_level_p(observed, null),
          "excess": float(observed - null.mean()), "excess_interval": _interval(excess)}


def group_tests(original: dict, neutral: dict, at_k: dict) -> dict:
  """Every test of one group at one K, before the run-wide adjustment (decide).

  original, neutral: concept -> its K=0 / neutral-everywhere row; at_k: kind -> the group's rows
  at this K ("top", "random", "reverse", "reverse_random"). Concepts count where their original,
  neutral and top-K rows have per-image presence of one length; draws are those every counted
  concept has.
  """
  top = {r["concept"]: r for r in at_k["top"]}
  counted = [c for c in top if c in original and c in neutral
             and measure(top[c]).size and measure(original[c]).shape == measure(top[c]).shape
             == measure(neutral[c]).shape]
  result = {"measure": "probability", "tested_concepts": len(counted), "removal": None,
            "reverse": None, "sufficiency": None, "floor": None, "specificity": None}
  if not counted:
    return result
  result["hits"] = {name: hit_rates(rows, counted)
                    for name, rows in (("original", original), ("top", top), ("neutral", neutral))}
  sizes = [(measure(top[c]).size // top[c].get("seeds", 1), top[c].get("seeds", 1)) for c in counted]
  uniform = np.concatenate([np.full(p * s, 1.0 / (len(sizes) * p * s)) for p, s in sizes])
  weights = np.vstack([uniform, hierarchical_weights(sizes)])
  joined = lambda rows: np.concatenate([measure(rows[c]) for c in counted])
  base, empty = joined(original), joined(neutral)
  result["floor"] = _floor(base, empty, [original[c].get("chance") for c in counted], weights)
  result["specificity"] = _specificity(counted, top, neutral, weights)
  draws = _shared_draws(at_k["random"], counted)
  if draws:
    drawn = np.stack([base - np.concatenate([draws[d][c] for c in counted]) for d in sorted(draws)])
    result["removal"] = set_test(base - joined(top), drawn, weights)
  reverse = {r["concept"]: r for r in at_k["reverse"]}
  if all(c in reverse for c in counted):
    # The reverse's gain is reported wherever the reverse ran; it is tested only against random
    # K-sets run in reverse (a run may have none: config.reverse_draws = 0).
    gain = joined(reverse) - empty
    result["reverse"] = {"gain": float(weights[0] @ gain), "gain_interval": _interval(weights[1:] @ gain)}
    backward = _shared_draws(at_k["reverse_random"], counted)
    if backward:
      gains = np.stack([np.concatenate([backward[d][c] for c in counted]) - empty
                        for d in sorted(backward)])
      result["sufficiency"] = set_test(gain, gains, weights)
  return result


def _shared_draws(rows: Sequence[dict], counted: Sequence[str]) -> dict[int, dict]:
  """draw -> concept -> per-image presence, for the draws every counted concept has."""
  draws: dict[int, dict[str, np.ndarray]] = {}
  for r in rows:
    if r["concept"] in counted and measure(r).size:
      draws.setdefault(r["draw"], {})[r["concept"]] = measure(r)
  return {d: v for d, v in draws.items() if all(c in v for c in counted)}


def _floor(base: np.ndarray, empty: np.ndarray, chances: Sequence[float | None],
           weights: np.ndarray) -> dict:
  """The original's presence above the neutral prompt's and above chance (interval lower ends)."""
  above_neutral = _interval(weights[1:] @ (base - empty))
  presence = _interval(weights[1:] @ base)
  known = [c for c in chances if c is not None]
  chance = max(known) if known else None
  return {"original_minus_neutral": float(weights[0] @ (base - empty)),
          "original_minus_neutral_interval": above_neutral,
          "original_interval": presence, "chance": chance,
          "holds": bool(above_neutral[0] > 0 and (chance is None or presence[0] > chance))}


def _specificity(counted, top, neutral, weights) -> dict | None:
  """top-K's disturbance of the rest of the image beyond the neutral prompt's everywhere."""
  context = lambda rows: np.concatenate([np.asarray(rows[c].get("context") or [], float)
                                         for c in counted])
  kept, reference = context(top), context(neutral)
  if kept.size != weights.shape[1] or reference.size != weights.shape[1]:
    return None   # the judge gives no per-image context
  # How much more of the rest top-K loses than the neutral prompt does; an image whose prompt
  # names nothing else (NaN context) has nothing to lose.
  excess = np.nan_to_num(reference - kept, nan=0.0)
  interval = _interval(weights[1:] @ excess)
  return {"excess_damage": float(weights[0] @ excess), "excess_damage_interval": interval,
          "holds": bool(interval[0] <= 0)}


def decide(entries: list[dict]) -> None:
  """Adjust every removal and sufficiency p of a run's entries (Benjamini-Hochberg, each family
  apart) and set removable, sufficient and localized in place (RULE)."""
  for test, flag in (("removal", "removable"), ("sufficiency", "sufficient")):
    adjusted = benjamini_hochberg([(e["tests"][test] or {}).get("p") for e in entries])
    for entry, p in zip(entries, adjusted):
      found = entry["tests"][test]
      entry[f"p_{test}_adjusted"] = p
      entry[flag] = (None if found is None else
                     bool(p < ALPHA and found["excess_interval"][0] > 0))
  for entry in entries:
    tests = entry["tests"]
    removal, reverse = tests["removal"] or {}, tests["sufficiency"] or {}
    # Flat copies for tables that read one key per column (report_html).
    entry.update(p_set=removal.get("p"), beats=removal.get("beats"),
                 top_minus_null=removal.get("excess"),
                 top_minus_null_interval=removal.get("excess_interval"),
                 reverse_gain=(tests["reverse"] or {}).get("gain"), p_reverse_set=reverse.get("p"))
    floor, specific = tests["floor"], tests["specificity"]
    if entry["removable"] is None or floor is None or not floor["holds"]:
      entry["localized"] = None
    elif specific is None:
      entry["localized"] = None if entry["removable"] else False
    else:
      entry["localized"] = bool(entry["removable"] and specific["holds"])
