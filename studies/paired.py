"""Paired differences with a bootstrap interval, and the words a README may say about them.

The benchmarks that compare two methods on the same units (planted_knowledge: a localizer against a
baseline on the same plantings; finetune_controls: localized against a control on the same concept
and seed) say "higher" or "lower" only where the 95 % bootstrap interval of the mean paired
difference excludes 0, and only from MIN_PAIRS pairs on.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dit_jax.verdict import stats

# A bootstrap interval of 2-5 paired differences is little more than their range (it undercovers
# badly): words wait for six pairs (two thirds of a 3 x 3 concept x seed design).
MIN_PAIRS = 6


def interval(values) -> list[float] | None:
  found = stats.bootstrap_interval(values)   # None below two values
  return None if found is None else [float(found[0]), float(found[1])]


def difference(a: Sequence[float], b: Sequence[float]) -> dict:
  """The mean of a - b over pairs, its bootstrap interval and the number of pairs."""
  if len(a) != len(b):
    raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
  diffs = np.asarray(a, float) - np.asarray(b, float)
  return {"mean": float(diffs.mean()) if diffs.size else None, "interval": interval(diffs),
          "pairs": int(diffs.size)}


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


def cell(row: dict, min_pairs: int = MIN_PAIRS, n: int | None = None) -> str:
  """'0.12 [0.03, 0.20]'; the mean alone where there is no interval, and the mean with its count
  below min_pairs pairs, where a printed interval would be the undercovering one words wait for.
  n: how many values the row's interval is over (default: its pairs), e.g. runs of one variant."""
  i, n = row["interval"], row.get("pairs") if n is None else n
  if n is not None and n < min_pairs:
    return f"{row['mean']:.2f} (n = {n})"
  return f"{row['mean']:.2f}" + ("" if i is None else f" [{i[0]:.2f}, {i[1]:.2f}]")
