"""Localized fine-tuning: which blocks train (the objectives are in dit_jax/objectives/).

Blocks are numbered as localization ranks them (config.block_names); a selection is "all", an
explicit list, or the top-k blocks of a concept from a localization run's scores.json.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from dit_jax.localization import rank_blocks


def select_blocks(spec: str | Sequence[int], num_blocks: int, concept: str = "", k: int = 0,
                  variant: str = "with_wo") -> list[int] | None:
  """The blocks to train: None for "all"; an explicit list ("3,7,9" or a sequence of ints); or the
  top-k blocks of `concept` from a localization run's scores.json (a path ending in .json)."""
  if isinstance(spec, str) and spec.strip() == "all":
    return None
  if isinstance(spec, str) and spec.endswith(".json"):
    blocks = top_blocks_from_scores(spec, concept, k, variant)
  else:
    try:
      blocks = sorted({int(b) for b in (spec.split(",") if isinstance(spec, str) else spec)})
    except ValueError:
      raise ValueError(f"blocks={spec!r}: use 'all', a list like '3,7,9', or a scores.json path")
  bad = [b for b in blocks if not 0 <= b < num_blocks]
  if bad or not blocks:
    raise ValueError(f"blocks {bad or blocks} are not a non-empty subset of 0..{num_blocks - 1}")
  return blocks


def top_blocks_from_scores(path: str, concept: str, k: int, variant: str = "with_wo") -> list[int]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no localization scores; run localize.py first")
  with open(path) as f:
    scores = json.load(f)
  if concept not in scores:
    raise KeyError(f"{path} has no scores for {concept!r}; it has {sorted(scores)}")
  block_scores = np.asarray(scores[concept][variant])
  if not 1 <= k <= len(block_scores):
    raise ValueError(f"k={k}: taking the top-k blocks from {path} needs 1 <= k <= "
                     f"{len(block_scores)} (the model's blocks)")
  return sorted(int(b) for b in rank_blocks(block_scores)[:k])
