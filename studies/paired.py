"""Paired differences with an exact interval, and the words a README may say about them.

The benchmarks that compare two methods on the same units (planted_knowledge: a localizer against a
baseline on the same plantings; finetune_frontier: localized against a control on the same concept
and seed) say "higher" or "lower" only where the exact 95 % sign-flip interval of the mean paired
difference (studies/signflip.py) excludes 0, and only from MIN_PAIRS units on. `with_margin` adds
what a stated margin lets the same interval say, by one rule for every measure and both directions.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dit_jax.verdict import stats
from studies import signflip

# A bootstrap interval of 2-5 paired differences is little more than their range (it undercovers
# badly): words wait for six pairs (two thirds of a 3 x 3 concept x seed design). Six is also the
# fewest clusters with an exact 95 % sign-flip interval (studies/signflip.py: 2/2^6 < 0.05).
MIN_PAIRS = 6


def interval(values) -> list[float] | None:
  found = stats.bootstrap_interval(values)   # None below two values
  return None if found is None else [float(found[0]), float(found[1])]


def difference(a: Sequence[float], b: Sequence[float]) -> dict:
  """The mean of a - b over pairs, its exact sign-flip interval (studies/signflip.py: each pair
  independent, its sign a coin flip under the null; none below MIN_PAIRS) and the number of
  pairs."""
  if len(a) != len(b):
    raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
  diffs = np.asarray(a, float) - np.asarray(b, float)
  return {"mean": float(diffs.mean()) if diffs.size else None,
          "interval": signflip.interval(diffs) if diffs.size else None, "pairs": int(diffs.size)}


def verdict(row: dict, min_pairs: int = MIN_PAIRS) -> str:
  """'higher' / 'lower' only where the interval excludes 0, from min_pairs pairs on."""
  if row["interval"] is None:
    return "no interval"
  if row["pairs"] < min_pairs:
    return f"too few pairs to say (< {min_pairs})"
  low, high = row["interval"]
  if low > 0:
    return "higher"
  if high < 0:
    return "lower"
  return "no difference shown"


def with_margin(row: dict, margin: float, count: str = "pairs", min_count: int = MIN_PAIRS) -> str:
  """The words for a difference a - b (higher is better for a) against a margin fixed before the
  run, the same for every measure and symmetric in a and b (swapping them mirrors the words):
  "higher" / "lower" where the interval excludes 0, else "no difference shown"; then "not lower
  by more than <margin>" where its lower end is above -margin (non-inferior), "not higher by more
  than <margin>" where its upper end is below +margin, both at once "within +-<margin>". A
  difference shown but inside the margin says so. count: the row's key for its number of
  independent units (its interval is over them), words from min_count on."""
  if row[count] < min_count:
    return f"too few {count} to say (< {min_count})"
  if row["interval"] is None:
    return "no interval"
  low, high = row["interval"]
  above, below = low > -margin, high < margin
  if low > 0:
    return "higher" + (f", by less than {margin:g}" if below else "")
  if high < 0:
    return "lower" + (f", by less than {margin:g}" if above else "")
  if above and below:
    return f"no difference shown; within +-{margin:g}"
  if above:
    return f"no difference shown; not lower by more than {margin:g}"
  if below:
    return f"no difference shown; not higher by more than {margin:g}"
  return "no difference shown"


def non_inferior(row: dict, margin: float) -> bool:
  """The interval's lower end is above -margin: a is not worse than b by the margin or more."""
  return row["interval"] is not None and row["interval"][0] > -margin


def cell(row: dict, min_pairs: int = MIN_PAIRS, n: int | None = None) -> str:
  """'0.12 [0.03, 0.20]'; the mean alone where there is no interval, and the mean with its count
  below min_pairs pairs, where a printed interval would be the undercovering one words wait for.
  n: how many values the row's interval is over (default: its pairs), e.g. runs of one variant."""
  i, n = row["interval"], row.get("pairs") if n is None else n
  if n is not None and n < min_pairs:
    return f"{row['mean']:.2f} (n = {n})"
  return f"{row['mean']:.2f}" + ("" if i is None else f" [{i[0]:.2f}, {i[1]:.2f}]")
