"""Interventions that backbones accept as explicit arguments (no hooks), so jax.vmap composes.

Every intervention replaces the text input of the attention in selected blocks, as the paper does
(arXiv 2505.18832): PixArt's and SANA's cross-attention read another prompt's caption (TextSwap);
FLUX's joint attention reads the text input that the neutral trajectory, run in the same batch,
gives the same attention (TextAttentionSwap). TextResidualSwap, which replaces FLUX's whole text
residual stream from the selected blocks onward, is a named control, not the paper's method.
BlockEdit, for the bypass and patching localizers, edits whole blocks' image-token outputs instead
(skip a block's residual update, or restore it from another batch row).
Everything about which blocks are swapped and with what is data (arrays), never Python control
flow, so a batch of block selections is one vmapped, compiled call.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ConceptProbe(NamedTuple):
  """Asks a backbone for the concept scores of every block (docs/design.md, "The method").

  weights: (B, S) 0/1 weights on the concept's tokens of the text the attention reads (text order:
  the caption's; FLUX's T5 tokens). With a probe, a backbone returns (output, scores) with scores
  (B, num_blocks, len(variants.VARIANTS)): each block's attention contribution of those tokens to
  the image tokens, with W_O (no bias), without W_O, and as the paper's code computes it, in
  variants.VARIANTS order (layers.concept_scores).
  """
  weights: jax.Array


def probe_weights(probe: ConceptProbe | None, text_len: int) -> jax.Array | None:
  """The probe's (B, S) weights, checked against the text length; None without a probe."""
  if probe is None:
    return None
  if not isinstance(probe, ConceptProbe):
    raise TypeError(f"concept takes a ConceptProbe, got {type(probe).__name__}")
  if probe.weights.shape[1] != text_len:
    raise ValueError(f"concept weights cover {probe.weights.shape[1]} tokens, the text has {text_len}")
  return probe.weights


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


class TextAttentionSwap(NamedTuple):
  """FLUX (the paper's intervention, and the default): the selected blocks' attention reads another
  batch row's text input; everything else in the block, and every other block, keeps its own.

  The main and the neutral-prompt trajectories run in one batch from the same noise. In every
  selected block, the text that row b feeds to the joint attention is replaced by row source[b]'s
  text input to the same attention in the same block: in double-stream blocks the normalised,
  modulated text states (diffusers' norm1_context output, norm_encoder_hidden_states); in
  single-stream blocks the first S tokens of the normalised joint input given to the attention (the
  block's MLP still reads row b's own). The attention's text outputs, computed from the swapped
  queries, are added to row b's own text residual stream, as the paper's attention processors do
  (arXiv 2505.18832, ArmanZarei/DiT-Knowledge-Localization: save in a neutral pass, overwrite in
  the main pass). Row b with source[b] == b is untouched; for the paper's two-trajectory run the
  source rows must themselves be untouched (source[source[b]] == source[b]), so that they run
  exactly as if alone.

  block_mask: (num_layers + num_single_layers,) bool over double-stream then single-stream blocks.
  source: (B,) int32 batch row whose attention text input replaces this row's in selected blocks.
  """
  block_mask: jax.Array
  source: jax.Array

  def attention_text(self, i: int, text: jax.Array) -> jax.Array:
    """The (B, S, D) text input block i's attention should read, given the rows' own."""
    return _take_rows(self.block_mask, self.source, i, text)


class TextResidualSwap(NamedTuple):
  """FLUX, not the paper's: the selected blocks' whole text residual stream is replaced at the
  block input, and the replacement is carried onward to every later block.

  Kept as a separate, named control (reported apart, never the default): since the text stream
  carries the replacement to the end, selecting one early block turns the main prompt's text into
  the other prompt's for the rest of the network, so any selection acts mostly through its earliest
  block. Fields as TextAttentionSwap's.
  """
  block_mask: jax.Array
  source: jax.Array

  def text_input(self, i: int, text: jax.Array) -> jax.Array:
    """The (B, S, D) text residual stream block i should see."""
    return _take_rows(self.block_mask, self.source, i, text)


def during_steps(cond: dict, window: jax.Array, i) -> dict:
  """`cond` at sampling step i under a step window: every intervention in it (any NamedTuple with a
  block_mask: TextSwap, TextAttentionSwap, TextResidualSwap, ...) keeps its selected blocks only
  while start <= i < end, and reads no other text outside the window.

  window: (2,) int32 [start, end), an array so a sweep can vmap over windows. One rule for every
  intervention and family, instead of a window field on each (docs/design.md, "Time").
  """
  active = (window[0] <= i) & (i < window[1])
  windowed = lambda v: v._replace(block_mask=v.block_mask & active)
  return {k: windowed(v) if hasattr(v, "block_mask") and hasattr(v, "_replace") else v
          for k, v in cond.items()}


def _take_rows(block_mask, source, i: int, x):
  return jnp.where(block_mask[i], jnp.take(x, source, axis=0), x)


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


class BlockEdit(NamedTuple):
  """Edits of whole blocks' image-token outputs, for the bypass and patching localizers
  (docs/design.md, "Localizers"). After block i, on the image tokens:

  bypass: (num_blocks,) bool; where bypass[i] the block's output is its input: its residual update
    is skipped ("vital layers": how much the block matters at all).
  patch: (num_blocks,) bool; where patch[i] row b's output is replaced by row source[b]'s output of
    the same block (activation patching: a neutral-prompt row restores block i's output from the
    concept row run in the same batch from the same noise). Row b with source[b] == b is untouched.
  source: (B,) int32, the rows patched outputs are taken from.
  rows: (B,) bool, the rows the edit applies to; None: every row. Classifier-free guidance uses it
    to leave the unconditional half alone (edit_conditional_half).

  For FLUX and SD3 only the image stream is edited (in FLUX single blocks the image tokens of the
  joint stream); the text stream runs as it would. All fields are arrays, so a batch of edits is
  one vmapped call; an edit whose masks are all False gives the unedited forward (up to float
  rounding where the compiler fuses differently, see edit_block).
  """
  bypass: jax.Array
  patch: jax.Array
  source: jax.Array
  rows: jax.Array | None = None


def check_block_edit(edit: BlockEdit | None, num_blocks: int) -> None:
  if edit is None:
    return
  if not isinstance(edit, BlockEdit):
    raise TypeError(f"block_edit takes a BlockEdit, got {type(edit).__name__}")
  for name in ("bypass", "patch"):
    if getattr(edit, name).shape[-1] != num_blocks:
      raise ValueError(f"block_edit.{name} needs {num_blocks} entries (one per block), got "
                       f"{getattr(edit, name).shape[-1]}")


def edit_block(edit: BlockEdit | None, i: int, before: jax.Array, after: jax.Array) -> jax.Array:
  """Block i's (B, N, D) image-token output under `edit`, given its input `before` and its own
  output `after`.

  Fusion boundaries around the edit, so that an edit that selects nothing keeps the arithmetic of
  the block's own output where the compiler honours them. Without an edit none: a barrier at every
  block keeps XLA from fusing across blocks in plain sampling too (issue 42), so an empty edit and
  no edit may round differently on a GPU. XLA's CPU backend drops barriers before fusing anyway:
  there it may fuse the selects with the residual update and round it differently (measured: bit
  for bit on PixArt, within 1e-6 on FLUX; tests/localizers_test.py).
  """
  if edit is None:
    return after
  after = jax.lax.optimization_barrier(after)
  edited = jnp.where(edit.bypass[i], before, after)
  edited = jnp.where(edit.patch[i], jnp.take(edited, edit.source, axis=0), edited)
  if edit.rows is not None:
    edited = jnp.where(edit.rows[:, None, None], edited, after)
  return jax.lax.optimization_barrier(edited)


def edit_conditional_half(edit: BlockEdit | None, batch: int) -> BlockEdit | None:
  """The edit for a classifier-free-guidance batch [unconditional; conditional] of 2 * batch rows:
  the conditional rows are edited as `edit` says (sources shifted into their half), the
  unconditional rows never."""
  if edit is None:
    return None
  own = jnp.arange(batch, dtype=edit.source.dtype)
  rows = jnp.ones((batch,), bool) if edit.rows is None else edit.rows
  return BlockEdit(edit.bypass, edit.patch, jnp.concatenate([own, edit.source + batch]),
                   jnp.concatenate([jnp.zeros((batch,), bool), rows]))
