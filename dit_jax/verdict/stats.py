"""Statistics that let a localization verdict say "no" (docs/design.md, "Statistics").

The unit is one (prompt, seed) pair: one image, judged once per intervention. Every intervention
of a concept starts from the same noise, so the units of two interventions are paired. The
numbers come from scipy.stats; this module only chooses the test and fixes its seed.

    bootstrap_interval(values)                  95% interval of the mean over units
    wilson(hits, n)                             95% Wilson interval of a proportion
    clopper_pearson(hits, n)                    its exact 95% interval (placebo rates)
    presence_interval(values)                   the bootstrap's, at least as wide as Wilson's
    paired_permutation_p(differences)           one-sided sign-flip test of mean(differences) > 0
    draw_level_p(top_drop, draw_drops)          (1 + #{draws with drop >= top's}) / (R + 1)
    compare(top_drops, control_drops)           the three above for top-K against a control
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 9999
SEED = 0          # fixed: a re-analysis of the same rows gives the same intervals and p-values
ALPHA = 0.05


def _rng() -> np.random.Generator:
  return np.random.default_rng(SEED)


def bootstrap_interval(values: Sequence[float]) -> tuple[float, float] | None:
  """The 95% bootstrap interval (BCa, percentile where BCa is undefined) of the mean of `values`.

  None with fewer than two units (no spread to resample). Where every unit agrees the bootstrap
  has nothing to resample and would claim a zero-width interval: at 0 or 1 (every image shows the
  concept, or none does) the Wilson interval of that proportion over the units is given instead,
  elsewhere None (no interval can be read off identical values).
  """
  x = np.asarray(values, float)
  if x.ndim != 1:
    raise ValueError(f"want one value per unit (a 1-d array), got shape {x.shape}")
  if x.size < 2:
    return None
  if np.ptp(x) == 0:
    if x[0] in (0.0, 1.0):
      return tuple(wilson(float(x.sum()), x.size))
    return None
  for method in ("BCa", "percentile"):
    # BCa corrects the percentile interval for bias and skew (presences pile up at 0 and 1); it
    # is undefined (NaN, with a warning) when the jackknife has no spread, e.g. one odd unit.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
      warnings.simplefilter("ignore")   # scipy's degenerate-resample warnings: handled below
      result = stats.bootstrap((x,), np.mean, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                               method=method, rng=_rng())
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
      return float(low), float(high)
  raise AssertionError(f"no finite bootstrap interval for {x}")   # percentile is always finite


def wilson(hits: float, n: int, z: float = 1.959964) -> list[float] | None:
  """The 95% Wilson interval of a proportion of `hits` in `n` (None without units)."""
  if n == 0:
    return None
  p = hits / n
  centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  return [float((centre - half) / (1 + z * z / n)), float((centre + half) / (1 + z * z / n))]


def clopper_pearson(hits: int, n: int) -> list[float]:
  """The exact 95% interval of a binomial proportion."""
  low = 0.0 if hits == 0 else float(stats.beta.ppf(0.025, hits, n - hits + 1))
  high = 1.0 if hits == n else float(stats.beta.ppf(0.975, hits + 1, n - hits))
  return [low, high]


def presence_interval(values: Sequence[float]) -> tuple[float, float] | None:
  """The 95% interval of a mean presence (values in [0, 1], one per unit): the bootstrap's, widened
  to at least the Wilson interval of that proportion over the units. Near 0 or 1 a few units that
  nearly agree give the bootstrap next to no spread ("1.00 [1.00, 1.00]" from 8 images); a
  presence read off n images is at least as uncertain as a proportion of n (the largest variance
  a mean of values in [0, 1] can have: conservative elsewhere too)."""
  x = np.asarray(values, float)
  boot = bootstrap_interval(x)
  if x.size < 2 or x.min() < 0 or x.max() > 1:
    return boot
  low, high = wilson(float(x.sum()), x.size)
  return (min(low, boot[0]), max(high, boot[1])) if boot else (low, high)


def paired_permutation_p(differences: Sequence[float]) -> float | None:
  """p-value of the one-sided paired test that mean(differences) > 0 (top-K removes more than the
  control on the same units): scipy's permutation_test with permutation_type='samples', which for
  one sample flips the sign of each unit's difference (exact when 2^n <= RESAMPLES)."""
  d = np.asarray(differences, float)
  if d.size < 2:   # one unit has no sign to flip against another: no test (scipy refuses it)
    return None
  result = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="greater",
                                  n_resamples=RESAMPLES, vectorized=True, rng=_rng())
  return float(result.pvalue)


def draw_level_p(top_drop: float, draw_drops: Sequence[float]) -> float | None:
  """(1 + #{control draws whose drop >= top-K's}) / (R + 1): where top-K's drop ranks among R
  random block sets, each judged on the same units. The smallest possible value is 1 / (R + 1)
  (0.048 for R = 20), so it can only reach p < 0.05 with R >= 20 draws. None without draws."""
  drops = np.asarray(draw_drops, float)
  if drops.size == 0 or top_drop is None:
    return None
  # A draw whose drop equals top-K's up to rounding counts against top-K.
  at_least = int(np.sum(drops >= top_drop - 1e-12))
  return (1 + at_least) / (drops.size + 1)


def compare(top_drops: Sequence[float], control_drops: np.ndarray) -> dict:
  """Top-K against a control of R block-set draws on the same U units.

  top_drops: (U,) per unit, presence at K=0 minus presence under top-K; control_drops: (R, U) the
  same under each control draw. Returns the control's mean drop and its interval, the paired
  difference top - control (per unit, against the mean over draws) with its interval, `p` (the
  paired permutation test on those differences) and `p_draws` (draw_level_p on the drops averaged
  over units). Empty values are None.
  """
  top = np.asarray(top_drops, float)
  control = np.asarray(control_drops, float).reshape(-1, top.size)
  if control.shape[0] == 0 or top.size == 0:
    return {"drop": None, "drop_interval": None, "difference": None,
            "difference_interval": None, "p": None, "p_draws": None}
  per_unit = control.mean(axis=0)
  difference = top - per_unit
  return {"drop": float(per_unit.mean()), "drop_interval": bootstrap_interval(per_unit),
          "difference": float(difference.mean()),
          "difference_interval": bootstrap_interval(difference),
          "p": paired_permutation_p(difference),
          "p_draws": draw_level_p(float(top.mean()), control.mean(axis=1))}

