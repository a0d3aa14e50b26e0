"""Success at matched preservation: a variant's success-preservation frontier, read at fixed
preservation levels; a bootstrap that resamples concepts for a variant's own values, an exact
sign-flip interval over concepts for a difference between two (studies/finetune_frontier.py).

A fine-tuning run gives points (preservation, success), one per learning rate and measured step,
plus the base model's (step 0, which every variant shares). The frontier is their upper envelope:
the Pareto points (no other point has at least the preservation and more success), joined by
straight lines. Success at preservation level p is read off that polyline:

  - between two Pareto points, linear interpolation in preservation (a rate or step between the
    two is assumed to land on the line between them; the step function through the points alone
    would understate every variant alike);
  - below the lowest-preservation Pareto point, that point's success (allowing more loss buys
    nothing the runs reached);
  - above the highest preservation any point reached, no value (None): the variant never got there.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from studies import clustered, signflip


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
  """The (preservation, success) points no other point dominates, by preservation descending
  (success then ascending). Equal points count once."""
  front: list[tuple[float, float]] = []
  for x, y in sorted(set(map(tuple, points)), key=lambda p: (-p[0], -p[1])):
    if not front or y > front[-1][1]:
      front.append((float(x), float(y)))
  return front


def success_at(points: Sequence[tuple[float, float]], level: float) -> float | None:
  """Success on the frontier of `points` at preservation `level` (module docstring)."""
  front = pareto(points)
  if not front or level > front[0][0]:
    return None
  for (x1, y1), (x0, y0) in zip(front, front[1:]):   # x1 > x0, y1 < y0
    if x0 <= level <= x1:
      return y1 + (y0 - y1) * (x1 - level) / (x1 - x0)
  return front[-1][1]


def cluster_bootstrap(values: dict[str, Sequence[float]], resamples: int = clustered.RESAMPLES,
                      seed: int = 0) -> dict:
  """Mean of per-(concept, seed) values, weighting concepts equally, with a 95 % interval from the
  two-stage bootstrap of studies/clustered.py (concepts, then each drawn concept's seeds): concepts
  are the unit a reader generalises over, and one concept's seeds are not three pieces of evidence.
  Counted as "concepts" and "pairs", the names the fine-tuning tables use."""
  found = clustered.summary(values, resamples, seed)
  return {"mean": found["mean"], "interval": found["interval"], "concepts": found["clusters"],
          "pairs": found["values"]}


def cluster_difference(values: dict[str, Sequence[float]]) -> dict:
  """Per-(concept, seed) paired differences: the mean over concepts of their mean, and the exact
  sign-flip interval over concepts (studies/signflip.py; None below 6 concepts), where a bootstrap
  over 6 concepts undercovers. Counted as "concepts" and "pairs"."""
  found = signflip.difference(values)
  return {"mean": found["mean"], "interval": found["interval"], "concepts": found["clusters"],
          "pairs": found["values"]}
