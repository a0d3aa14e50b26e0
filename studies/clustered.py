"""A mean over clusters of values and its bootstrap interval: concepts with their seeds (the
fine-tuning study), plantings with their training seeds (the planting studies).

Values within a cluster share its concept or planting: they are not independent of each other.
Resampling the values one by one would give an interval as if there were as many clusters as
values. Here the bootstrap is two-stage, as the verdict's (dit_jax/verdict/sets.py,
hierarchical_weights): draw clusters with replacement, then within each drawn cluster its values
with replacement. The mean weighs every cluster the same, whatever its number of values (a planting
with one seed that took counts as much as one with two), and the interval reflects how many
clusters there are. Where every value agrees the interval is that point: nothing varies to resample.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dit_jax.verdict.sets import hierarchical_weights

RESAMPLES = 4000


def summary(clusters: Mapping[str, Sequence[float]], resamples: int = RESAMPLES, seed: int = 0) -> dict:
  """{"mean": the mean of the cluster means, "interval": its 95 % percentile interval from the
  two-stage bootstrap (None below two clusters), "clusters": how many clusters have values,
  "values": how many values in all}. Empty clusters are left out."""
  groups = [np.asarray(v, float) for v in clusters.values() if len(v)]
  if not groups:
    return {"mean": None, "interval": None, "clusters": 0, "values": 0}
  found = {"mean": float(np.mean([g.mean() for g in groups])), "interval": None,
           "clusters": len(groups), "values": int(sum(len(g) for g in groups))}
  if len(groups) < 2:
    return found
  # A cluster's values are the units within it, one draw each.
  means = hierarchical_weights([(len(g), 1) for g in groups], resamples, seed) @ np.concatenate(groups)
  found["interval"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
  return found
