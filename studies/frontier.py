"""Success at matched preservation: a variant's success-preservation frontier, read at fixed
preservation levels, and a bootstrap that resamples concepts (studies/finetune_frontier.py).

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

from dit_jax.verdict.sets import hierarchical_weights

RESAMPLES = 4000


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


def cluster_bootstrap(values: dict[str, Sequence[float]], resamples: int = RESAMPLES,
                      seed: int = 0) -> dict:
  """Mean of per-(concept, seed) values, weighting concepts equally, with a 95 % percentile
  interval from a two-stage bootstrap: draw concepts with replacement, then within each drawn
  concept draw its seeds with replacement (dit_jax/verdict/sets.hierarchical_weights). Concepts
  are the unit a reader generalises over, and seeds of one concept are not independent of each
  other: resampling the pairs alone would treat one concept's three seeds as three pieces of
  evidence."""
  groups = [np.asarray(v, float) for v in values.values() if len(v)]
  if not groups:
    return {"mean": None, "interval": None, "concepts": 0, "pairs": 0}
  mean = float(np.mean([g.mean() for g in groups]))
  found = {"mean": mean, "interval": None, "concepts": len(groups),
           "pairs": int(sum(len(g) for g in groups))}
  if len(groups) < 2:
    return found
  # The verdict's hierarchical bootstrap, with a concept's seeds as its units (one seed each).
  weights = hierarchical_weights([(len(g), 1) for g in groups], resamples, seed)
  means = weights @ np.concatenate(groups)
  found["interval"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
  return found
