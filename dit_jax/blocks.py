"""Which blocks: the one vocabulary localization, LoRA and training share.

Blocks are numbered as the backbone config orders them (config.block_names; FLUX: D0..D18 then
S0..S37, docs/design.md "Blocks"). A choice is spoken one way and becomes what each stage needs here:
  a spec -> indices    select_blocks ("all", "3,7,9", labels "D2,S0", a concept's top-k from a
                       localization run's scores.json), resolve_k (K as a count or a fraction),
                       rank_blocks (scores -> the order localization ranks in);
  indices -> a mask    masks (one row per chosen set: the sweep's interventions, a localizer's
                       single blocks);
  indices -> params    parameter_selector (the parameter paths of the chosen blocks, or of some
                       sub-modules of them: what trains, what LoRA adapts).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import numpy as np

from dit_jax.models.variants import stored_scores


def select_blocks(spec: str | Sequence[int], num_blocks: int, concept: str = "", k: int = 0,
                  variant: str = "with_wo", labels: Sequence[str] | None = None) -> list[int] | None:
  """The blocks to train: None for "all"; an explicit list ("3,7,9", a sequence of ints, or the
  model's labels: FLUX's "D3,S12", as config.block_labels names them); or the top-k blocks of
  `concept` from a localization run's scores.json (a path ending in .json; `variant` is its
  score of that name, one of variants.VARIANTS)."""
  if isinstance(spec, str) and spec.strip() == "all":
    return None
  if isinstance(spec, str) and spec.endswith(".json"):
    blocks = top_blocks_from_scores(spec, concept, k, variant)
  else:
    items = [b.strip() for b in spec.split(",") if b.strip()] if isinstance(spec, str) else list(spec)
    index = {label.lower(): i for i, label in enumerate(labels or ())}
    blocks = set()
    for item in items:
      if isinstance(item, str) and item.lower() in index:
        blocks.add(index[item.lower()])
        continue
      try:
        blocks.add(int(item))
      except ValueError:
        named = f" or labels such as {labels[0]},{labels[-1]}" if labels else ""
        raise ValueError(f"blocks={spec!r}: {item!r} is not a block of this model; use 'all', a "
                         f"list like '3,7,9'{named}, or a scores.json path") from None
    blocks = sorted(blocks)
  bad = [b for b in blocks if not 0 <= b < num_blocks]
  if bad or not blocks:
    raise ValueError(f"blocks {bad or blocks} are not a non-empty subset of 0..{num_blocks - 1}: "
                     f"the model has {num_blocks} blocks")
  return blocks


def top_blocks_from_scores(path: str, concept: str, k: int, variant: str = "with_wo") -> list[int]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no localization scores; run localize.py first")
  with open(path) as f:
    scores = json.load(f)
  if concept not in scores:
    raise KeyError(f"{path} has no scores for {concept!r}; it has {sorted(scores)}")
  block_scores = np.asarray(stored_scores(scores[concept], variant))
  if not 1 <= k <= len(block_scores):
    raise ValueError(f"k={k}: taking the top-k blocks from {path} needs 1 <= k <= "
                     f"{len(block_scores)} (the model's blocks)")
  return sorted(int(b) for b in rank_blocks(block_scores)[:k])


def resolve_k(k: float, num_blocks: int) -> int:
  """K as a count (k >= 1) or a fraction of the blocks (0 <= k < 1, as the default grid 10/30/50 %)."""
  if k < 0 or k > num_blocks:
    raise ValueError(f"K={k} is outside [0, {num_blocks}] blocks")
  return int(round(k * num_blocks)) if k < 1 else int(k)


def rank_blocks(block_scores: np.ndarray) -> np.ndarray:
  """Block indices from the largest score to the smallest (ties keep block order)."""
  return np.argsort(-np.asarray(block_scores), kind="stable")


# Sub-modules of a cross-attention family's block by role (PixArt and SANA name them alike), for
# parameter_selector(parts=...) and config.block_parts ("ff" / "attn1,attn2"): what a
# weight-restricted planting trains (studies/planted_weights.py). "attention" is the block's self-
# and cross-attention (query, key, value and output projections), not its adaLN scale_shift_table.
BLOCK_PARTS = {"mlp": ("ff",), "attention": ("attn1", "attn2")}


def parameter_selector(blocks: list[int] | None, config=None,
                       parts: Sequence[str] = ()) -> Callable[[str], bool]:
  """Trainable test for the parameters of the listed blocks (None: every parameter). Block numbers
  follow config.block_names; without a config they name `transformer_blocks.<b>`. parts: only these
  sub-modules of each block (e.g. BLOCK_PARTS["mlp"], PixArt's feed-forward: weights the attention
  score does not read); empty: the whole block. A part is a whole sub-module name ("attn1" does not
  match "attn10"), so a misspelt part selects nothing (loop.split_params refuses that)."""
  if blocks is None:
    return lambda name: True
  if config is None:
    prefixes = [f"transformer_blocks.{b}/" for b in blocks]
  else:
    names = config.block_names
    if bad := [b for b in blocks if not 0 <= b < len(names)]:
      raise ValueError(f"blocks {bad} do not exist: the model has {len(names)} (0..{len(names) - 1})")
    prefixes = [names[b] + "/" for b in blocks]
  if parts:
    prefixes = [prefix + part + "/" for prefix in prefixes for part in parts]
  return lambda name: name.startswith(tuple(prefixes))


def masks(sets: Sequence[Sequence[int]], num_blocks: int) -> np.ndarray:
  """(len(sets), num_blocks) bool: row i marks the blocks of sets[i] (an intervention's blocks)."""
  mask = np.zeros((len(sets), num_blocks), bool)
  for i, chosen in enumerate(sets):
    mask[i, list(chosen)] = True
  return mask
