"""A mean and its bootstrap interval over clusters of values (plantings x training seeds).

Two seeds of one planting share its blocks, its name and its data: they are not two independent
plantings. Resampling the seed-runs one by one would count each planting twice and give an
interval as if there were twice as many plantings. Here each cluster first becomes its mean and the
bootstrap resamples those means, i.e. whole clusters with their seeds inside, so the interval
reflects how many clusters there are. Every cluster weighs the same, whatever its number of values
(a planting with one seed that took counts as much as one with two).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dit_jax.verdict import stats


def cluster_means(clusters: Mapping[str, Sequence[float]]) -> dict[str, float]:
  """cluster -> the mean of its values; an empty cluster is an error (it has nothing to weigh)."""
  if empty := [name for name, values in clusters.items() if len(values) == 0]:
    raise ValueError(f"clusters {empty} have no values")
  return {name: float(np.mean(values)) for name, values in clusters.items()}


def summary(clusters: Mapping[str, Sequence[float]]) -> dict:
  """{"mean": the mean of the cluster means, "interval": its 95 % bootstrap interval over clusters
  (stats.bootstrap_interval of the cluster means: None below two clusters), "clusters": how many,
  "values": how many values in all}."""
  means = list(cluster_means(clusters).values())
  found = stats.bootstrap_interval(means) if means else None
  return {"mean": float(np.mean(means)) if means else None,
          "interval": None if found is None else [float(found[0]), float(found[1])],
          "clusters": len(means), "values": int(sum(len(v) for v in clusters.values()))}
