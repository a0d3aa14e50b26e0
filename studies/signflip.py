"""The exact interval of a mean difference over few independent clusters, and how often a rule
says "higher" or "lower" when nothing differs (its false-positive rate) or when something does
(its power), both by enumerating every sign pattern.

Why not the bootstrap. The fine-tuning comparisons have 6 concepts, each a cluster of seeds. A
percentile bootstrap over 6 clusters undercovers: on the stored personalization runs, flipping
every concept's difference in turn (the null below) made the cluster bootstrap's 95 % interval
exclude 0 in 6-19 % of the 64 patterns at the headline loss, not 5 % (results/finetune_frontier.json,
"calibration"). What holds at this size is the sign-flip test: under the null that each cluster's
mean difference is as likely negative as positive, all 2^G sign patterns of the G cluster means are
equally likely. Inverting it for the mean gives Hartigan's subset-means interval (docs/design.md):

    one-sided p of "mean > d" = (1 + #{non-empty subsets S: mean of S <= d}) / 2^G,

so the 95 % interval runs from the (k+1)-th smallest to the (k+1)-th largest of the 2^G - 1 subset
means, k = floor(0.025 * 2^G) - 1. Its coverage is exact, 1 - 2 (k + 1) / 2^G (96.9 % at G = 6,
95.3 % at 12), for any symmetric cluster distribution, and below 6 clusters (k < 0) there is no 95 %
interval at all. At G = 6 it is [min, max] of the cluster means: "higher" needs every concept to
say so. Clusters weigh the same (each is its own mean), as the summaries' means do.

False positives and power of an interval rule, enumerated on the data it will judge: the noise is
the cluster means minus their mean (each value of a cluster shifted alike), every sign pattern of
it one null draw; a rule's interval of a draw shifted by delta is its interval plus delta (both
rules here are means with weights summing to 1), so one enumeration gives power at every delta.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
MAX_CLUSTERS = 20      # 2^20 subset means (8 MB); nothing here has more clusters
DELTAS = (0.05, 0.1, 0.2, 0.3)


def patterns(g: int) -> np.ndarray:
  """(2^g, g) every sign pattern, +1 / -1, pattern 0 all +1."""
  if g > MAX_CLUSTERS:
    raise ValueError(f"{g} clusters: enumerating 2^{g} sign patterns is past MAX_CLUSTERS = "
                     f"{MAX_CLUSTERS}")
  return 1 - 2 * ((np.arange(2 ** g)[:, None] >> np.arange(g)) & 1)


def subset_means(means: Sequence[float]) -> np.ndarray:
  """The means of the 2^G - 1 non-empty subsets of the cluster means, sorted."""
  m = np.asarray(means, float)
  inside = (patterns(m.size)[1:] < 0).astype(float)      # a subset per non-zero pattern
  return np.sort(inside @ m / inside.sum(1))


def interval(means: Sequence[float], level: float = LEVEL) -> list[float] | None:
  """The exact interval of the mean of `means` (module docstring); None where 2^G is too few
  patterns for `level` (fewer than 6 clusters at 95 %)."""
  k = int(np.floor((1 - level) / 2 * 2 ** len(means))) - 1
  if k < 0:
    return None
  found = subset_means(means)
  return [float(found[k]), float(found[-k - 1])]


def cluster_means(clusters: Mapping[str, Sequence[float]]) -> dict[str, float]:
  return {c: float(np.mean(v)) for c, v in clusters.items() if len(v)}


def difference(clusters: Mapping[str, Sequence[float]], level: float = LEVEL) -> dict:
  """{"mean": the mean of the cluster means, "interval": the exact interval (None below enough
  clusters), "clusters", "values"} for per-cluster paired differences."""
  means = list(cluster_means(clusters).values())
  return {"mean": float(np.mean(means)) if means else None,
          "interval": interval(means, level) if means else None, "clusters": len(means),
          "values": int(sum(len(v) for v in clusters.values()))}


def rates(clusters: Mapping[str, Sequence[float]],
          rule: Callable[[Mapping[str, Sequence[float]]], list[float] | None],
          deltas: Sequence[float] = DELTAS) -> dict | None:
  """How often `rule` (clusters -> a 95 % interval or None) excludes 0 on every sign pattern of
  the centred clusters (module docstring): "false_positive" (two-sided), "power" {delta: the
  share saying higher at that true difference}, "delta_at_80" (power is at least 0.8 for
  every true difference above it) and "patterns". None where the rule gives no interval."""
  kept = {c: np.asarray(v, float) for c, v in clusters.items() if len(v)}
  centre = float(np.mean([v.mean() for v in kept.values()]))
  lows, highs = [], []
  for signs in patterns(len(kept)):
    found = rule({c: s * (v - centre) for s, (c, v) in zip(signs, kept.items())})
    if found is None:
      return None
    lows.append(found[0])
    highs.append(found[1])
  lows, highs = np.array(lows), np.array(highs)
  # power(delta) = the share of patterns with -low < delta: at least 0.8 above this order statistic
  at_80 = float(np.sort(-lows)[int(np.ceil(0.8 * lows.size)) - 1])
  return {"false_positive": float(np.mean(lows > 0) + np.mean(highs < 0)),
          "power": {str(d): float(np.mean(lows + d > 0)) for d in deltas},
          "delta_at_80": at_80, "patterns": int(lows.size)}
