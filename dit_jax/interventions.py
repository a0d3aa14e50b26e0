"""Interventions that backbones accept as explicit arguments (no hooks), so jax.vmap composes.

A backbone asks `block_input(i, ...)` which input block i should see; everything about which blocks
are swapped and with what is data (arrays), never Python control flow, so a batch of block
selections is one vmapped, compiled call.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TextSwap(NamedTuple):
  """Cross-attention text input of selected blocks replaced by another prompt's (PixArt, SANA).

  block_mask: (num_blocks,) bool; True where block i reads `caption` instead of the prompt's own.
  caption: (B, S, caption_channels) raw text-encoder states of the replacement prompt.
  caption_mask: (B, S) 0/1 key mask of `caption`, or None.
  """
  block_mask: jax.Array
  caption: jax.Array
  caption_mask: jax.Array | None = None


def select(block_mask: jax.Array | None, i: int, swapped, own):
  """`swapped` where block i is selected, else `own` (pytrees of equal structure)."""
  if block_mask is None:
    return own
  return jax.tree_util.tree_map(lambda a, b: jnp.where(block_mask[i], a, b), swapped, own)


class TextStreamSwap(NamedTuple):
  """FLUX: selected blocks read another batch row's text stream (docs/design.md, "The method").

  The main and the neutral-prompt trajectories run in one batch from the same noise. At the input of
  every selected block, row b's text-stream states are replaced by row source[b]'s; the block then
  mixes them with row b's own image tokens, and the text stream carries the result onward. In
  single-stream blocks the text stream is the first S tokens of the joint sequence. Row b with
  source[b] == b is untouched, so the neutral rows run exactly as if alone.

  block_mask: (num_layers + num_single_layers,) bool over double-stream then single-stream blocks.
  source: (B,) int32 batch row whose text stream replaces this row's in the selected blocks.
  """
  block_mask: jax.Array
  source: jax.Array

  def text_input(self, i: int, text: jax.Array) -> jax.Array:
    """The (B, S, D) text stream block i should see."""
    return jnp.where(self.block_mask[i], jnp.take(text, self.source, axis=0), text)


def cross_attention_inputs(embed, caption, caption_mask, text_swap: TextSwap | None):
  """(own, swapped, block_mask) for a cross-attention DiT (PixArt, SANA).

  embed(caption, mask) -> (context, key bias) is the model's caption path; the swapped caption goes
  through the same layers. Feed the result to `select(block_mask, i, swapped, own)` per block.
  """
  own = embed(caption, caption_mask)
  if text_swap is None:
    return own, own, None
  if (text_swap.caption_mask is None) != (caption_mask is None):
    raise ValueError("give caption masks for both the prompt and the swapped caption, or neither")
  return own, embed(text_swap.caption, text_swap.caption_mask), text_swap.block_mask


def cross_attention_swap(loop, params, noise, concept, neutral, mask, reverse):
  """One intervention run of a cross-attention DiT (PixArt, SANA): the conditional branch reads the
  concept's text in unselected blocks and the neutral text in selected ones (TextSwap); reversed,
  the other way round. The unconditional branch is never touched."""
  pick = lambda a, b: jnp.where(reverse, b, a)
  keys = ("caption", "caption_mask")
  base = {k: pick(concept[k], neutral[k]) for k in keys}
  swap = {k: pick(neutral[k], concept[k]) for k in keys}
  cond = {**concept, **base, "text_swap": TextSwap(mask, swap["caption"], swap["caption_mask"])}
  return loop(params, noise, cond)
