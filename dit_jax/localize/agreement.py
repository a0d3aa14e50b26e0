"""How far localizers agree on which blocks carry a concept (docs/design.md, "Localizers").

    table = agreement.compute({"attention:with_wo": {concept: scores, ...}, "causal": {...}},
                              categories={concept: category}, k=4)

Per category and per pair of localizers: the mean over concepts of Kendall's tau between their
per-block scores (scipy.stats.kendalltau, tau-b: ties allowed) and of the top-K overlap (the share
of one's top-K blocks that are also the other's). A concept where either score is constant has no
tau (NaN) and is left out of that mean; "concepts" counts those that entered.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.stats

from dit_jax.blocks import rank_blocks

ALL = "all"   # the row over every concept of every category
RULE = ("per category, the mean over concepts of Kendall's tau-b between two localizers' per-block "
        "scores (concepts where either is constant left out) and of their top-K overlap "
        "(|top-K(a) & top-K(b)| / K), K the sweep's middle K")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
  """Kendall's tau-b of two per-block scores; NaN where either is constant."""
  a, b = np.asarray(a, float), np.asarray(b, float)
  if a.shape != b.shape:
    raise ValueError(f"scores of {len(a)} and {len(b)} blocks cannot be compared")
  if np.ptp(a) == 0 or np.ptp(b) == 0:
    return float("nan")
  return float(scipy.stats.kendalltau(a, b).statistic)


def top_k_overlap(a: Sequence[float], b: Sequence[float], k: int) -> float:
  """|top-K(a) & top-K(b)| / K, ranking as the sweep does (localization.rank_blocks)."""
  top = lambda s: set(rank_blocks(np.asarray(s, float))[:k].tolist())
  return len(top(a) & top(b)) / k


def compute(scores: Mapping[str, Mapping[str, Sequence[float]]], categories: Mapping[str, str],
            k: int) -> dict:
  """{category (and "all"): {"a vs b": {"kendall_tau", "top_k_overlap", "concepts"}}} over the
  concepts every localizer scored. scores: localizer -> concept -> per-block scores."""
  names = list(scores)
  concepts = [c for c in categories if all(c in scores[n] for n in names)]
  groups = {ALL: concepts}
  for c in concepts:
    groups.setdefault(categories[c], []).append(c)
  out = {}
  for group, members in groups.items():
    out[group] = {}
    for a, b in itertools.combinations(names, 2):
      taus = [kendall_tau(scores[a][c], scores[b][c]) for c in members]
      taus = [t for t in taus if not np.isnan(t)]
      overlaps = [top_k_overlap(scores[a][c], scores[b][c], k) for c in members]
      out[group][pair_name(a, b)] = {
          "kendall_tau": float(np.mean(taus)) if taus else None, "concepts": len(taus),
          "top_k_overlap": float(np.mean(overlaps)) if overlaps else None}
  return out


def pair_name(a: str, b: str) -> str:
  return f"{a} vs {b}"


def matrix(table: Mapping[str, dict], names: Sequence[str], key: str = "kendall_tau") -> np.ndarray:
  """(len(names), len(names)) of one group's `key`; 1 on the diagonal, NaN where undefined."""
  m = np.eye(len(names))
  for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
    value = table.get(pair_name(a, b), {}).get(key)
    m[i, j] = m[j, i] = np.nan if value is None else value
  return m


PANELS_PER_ROW = 4


def plot(table: Mapping[str, dict], names: Sequence[str], path: str) -> None:
  """agreement.png: one Kendall-tau matrix per group (every category, then all)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  groups = [g for g in table if g != ALL] + [ALL]
  size = 1.0 + 0.55 * len(names)
  # At most PANELS_PER_ROW matrices a row: one row of every category shrank to unreadable on the page.
  columns = min(PANELS_PER_ROW, len(groups))
  rows = -(-len(groups) // columns)
  fig, axes = plt.subplots(rows, columns, figsize=(size * columns, (size + 0.8) * rows), squeeze=False)
  for ax in axes.flat[len(groups):]:
    ax.axis("off")
  for ax, group in zip(axes.flat, groups):
    m = matrix(table[group], names)
    image = ax.imshow(m, vmin=-1, vmax=1, cmap="RdBu_r")
    for i, j in itertools.product(range(len(names)), repeat=2):
      ax.text(j, i, "-" if np.isnan(m[i, j]) else f"{m[i, j]:.2f}", ha="center", va="center",
              fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(names)), names if ax in axes[:, 0] else [], fontsize=9)
    ax.set_title(group, fontsize=10)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="mean Kendall tau")
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
