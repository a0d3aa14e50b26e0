"""FLUX.1 (dev, schnell) transformer in Flax (diffusers' FluxTransformer2DModel).

    packed latents -> x_embedder ----------\
    T5 states -> context_embedder --------- 19 x double-stream block ---> 38 x single-stream block
    timestep (+ guidance) + pooled CLIP -> temb (modulates every block)     (text ++ image, one stream)
                                                                                    |
                                             proj_out <- AdaLN-continuous norm <- image tokens

Double-stream block: image and text each have their own AdaLN-zero modulation, QKV projections with
RMS-normed queries and keys, output projection and MLP, but attend jointly (text tokens first).
Single-stream block: one sequence, attention and MLP in parallel from the same modulated input, their
outputs concatenated into one projection. Positions are 3-axis RoPE from txt_ids and img_ids.

The module holds only the network. The intervention of the localization study enters as an
explicit `text_swap` argument, so jax.vmap over block selections is one call:
  TextAttentionSwap (the paper's, arXiv 2505.18832, and the default of localization's sweep): the
    neutral trajectory runs in the same batch from the same noise; in each selected block the
    joint attention of the main row reads the neutral row's text input to that attention (double
    blocks: the normalised, modulated text; single blocks: the text part of the normalised joint
    input, while the block's MLP reads the row's own). The main row keeps its own text residual
    stream, to which the attention's text outputs are added as usual.
  TextResidualSwap (a control, not the paper's): the whole text residual stream is replaced at the
    selected blocks' input and carried onward, so the earliest selected block dominates.
Concept scores (docs/design.md) come out of every double and single block's joint attention, with
the same formula as PixArt's and SANA's cross-attention (layers.concept_scores).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dit_jax.models import layers
from dit_jax.models.base import DiffusersConfig
from dit_jax.models.interventions import (BlockEdit, ConceptProbe, TextAttentionSwap,
                                          TextResidualSwap, check_block_edit, edit_block,
                                          probe_weights)

Dtype = Any
NORM_EPS = 1e-6   # every LayerNorm and QK RMSNorm of FLUX
# (exponent bits, mantissa bits) of the half-precision compute dtypes, for lax.reduce_precision.
_MANTISSA = {jnp.dtype(jnp.bfloat16): (8, 7), jnp.dtype(jnp.float16): (5, 10)}


@dataclasses.dataclass(frozen=True)
class FluxConfig(DiffusersConfig):
  """The fields of diffusers' FluxTransformer2DModel config (defaults: FLUX.1-dev/schnell)."""
  patch_size: int = 1
  in_channels: int = 64
  out_channels: int | None = None
  num_layers: int = 19
  num_single_layers: int = 38
  attention_head_dim: int = 128
  num_attention_heads: int = 24
  joint_attention_dim: int = 4096
  pooled_projection_dim: int = 768
  guidance_embeds: bool = False
  axes_dims_rope: tuple[int, ...] = (16, 56, 56)

  def __post_init__(self):
    object.__setattr__(self, "axes_dims_rope", tuple(self.axes_dims_rope))  # JSON gives a list
    if sum(self.axes_dims_rope) != self.attention_head_dim:
      raise ValueError(f"axes_dims_rope {self.axes_dims_rope} must sum to attention_head_dim="
                       f"{self.attention_head_dim}: RoPE rotates every channel of a head")

  @property
  def block_names(self) -> list[str]:
    """Double-stream blocks, then single-stream ones: localization ranks them together."""
    return ([f"transformer_blocks.{i}" for i in range(self.num_layers)]
            + [f"single_transformer_blocks.{i}" for i in range(self.num_single_layers)])

  @property
  def block_labels(self) -> list[str]:
    return [f"D{i}" for i in range(self.num_layers)] + [f"S{i}" for i in range(self.num_single_layers)]


def round_to(dtype: Dtype, x: jax.Array) -> jax.Array:
  """float32 x rounded to `dtype`'s precision, kept in float32 (identity for float32).
  reduce_precision, not astype(dtype).astype(float32): XLA drops that round trip under jit."""
  if jnp.dtype(dtype) not in _MANTISSA:
    return x
  return jax.lax.reduce_precision(x, *_MANTISSA[jnp.dtype(dtype)])


def modulation(temb, chunks: int, name: str, dtype: Dtype):
  """SiLU -> Linear of the conditioning, split into `chunks` (B, 1, D) shift/scale/gate vectors."""
  dim = temb.shape[-1]
  return jnp.split(layers.dense(chunks * dim, name, dtype)(nn.silu(temb))[:, None], chunks, axis=-1)


def modulate(x, shift, scale, dtype: Dtype):
  return layers.layer_norm(dtype, NORM_EPS)(x) * (1 + scale) + shift


class FluxAttention(nn.Module):
  """Attention with RMS-normed queries and keys and RoPE (diffusers' FluxAttention).

  With `context`, the text stream has its own projections (add_*_proj, norm_added_*, to_add_out) and
  attends jointly with the image, text first; returns (image, text) outputs. Without, `x` is a
  single-stream block's joint sequence (text_len text tokens first) and it returns the unprojected
  heads: single-stream blocks project them together with their MLP. There `mlp` (the block's
  proj_mlp (kernel, bias)) runs in the same matmul as Q, K and V, as the original FLUX code's
  linear1 does, and its output is returned too; `swap` (attention_text_input's) replaces the text
  rows of Q, K and V, which is replacing the text tokens of the attention's input (the projection
  acts on each token alone), while the MLP keeps the row's own.

  With `concept` ((B, S) weights over the S text tokens, which come first), it also returns a
  function (W_O, bias) -> (B, 3) concept scores: image-token queries, softmax over all keys (text
  and image), values of keys outside the concept zeroed (layers.concept_scores). W_O is a parameter
  of whoever projects the heads (to_out.0 here, the single block's proj_out), hence a function.
  """
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  def project(self, x, q_name, k_name, v_name, q_norm, k_norm, extra=(), swap=None, text_len=0):
    inner = self.heads * self.head_dim
    # One matmul for the three, and for any extra (kernel, bias) reading the same x (fused_dense).
    parts = [layers.DenseParams(inner, name=name)(x.shape[-1]) for name in (q_name, k_name, v_name)]
    q, k, v, *rest = layers.fused_dense(x, parts + list(extra), self.dtype)
    if text_len:
      # A single block: the swap reaches the attention's text tokens only, the MLP reads the row's
      # own. The projection acts on each token alone, so swapping the text rows of Q, K and V is
      # swapping the rows they were projected from, and [QKV | MLP] stays one matmul. (Two matmuls,
      # the swapped input through QKV and the own through the MLP, round an empty swap differently
      # from no swap on some CPUs, since a matmul's rounding may depend on its shape;
      # tests/flux_swap_test.py wants them bit for bit.)
      q, k, v = (swap_text_tokens(t, text_len, swap) for t in (q, k, v))
    q, k, v = (t.reshape(*x.shape[:-1], self.heads, self.head_dim) for t in (q, k, v))
    rms = lambda name: layers.RMSNorm(NORM_EPS, dtype=self.dtype, name=name)
    return (rms(q_norm)(q), rms(k_norm)(k), v, *rest)

  @nn.compact
  def __call__(self, x, rope, context=None, concept=None, text_len=0, swap=None, mlp=None):
    extra = () if mlp is None else (mlp,)
    q, k, v, *mlp_out = self.project(x, "to_q", "to_k", "to_v", "norm_q", "norm_k", extra, swap,
                                     text_len if context is None else 0)
    if context is not None:
      text = self.project(context, "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q",
                          "norm_added_k")
      q, k, v = (jnp.concatenate([t, i], axis=1) for t, i in zip(text, (q, k, v)))
    q, k = layers.apply_rope(q, rope), layers.apply_rope(k, rope)
    out = layers.dot_product_attention(q, k, v)
    out = out.reshape(*out.shape[:2], self.heads * self.head_dim)
    score = None
    if concept is not None:
      text_len = concept.shape[1]
      weights = jnp.pad(concept, ((0, 0), (0, k.shape[1] - text_len)))   # no image key is the concept
      score = functools.partial(layers.concept_scores, q[:, text_len:], k, v, None, weights)
    if context is None:
      return out, (mlp_out[0] if mlp_out else None), score
    text_len, dim = context.shape[1], x.shape[-1]
    to_out = layers.dense(dim, "to_out.0", self.dtype)
    img_out = to_out(out[:, text_len:])
    txt_out = layers.dense(dim, "to_add_out", self.dtype)(out[:, :text_len])
    return img_out, txt_out, None if score is None else score(*layers.output_projection(to_out))


def swap_text_tokens(x, text_len: int, swap):
  """(B, T, D) x with its first text_len tokens (the text) given to attention_text_input."""
  return jnp.concatenate([attention_text_input(x[:, :text_len], swap), x[:, text_len:]], axis=1)


def attention_text_input(text, swap):
  """The text input the joint attention reads: `text`, or swap(text) under an intervention.

  Fusion boundaries around the swap, with or without one, so that compiled runs that select no
  block give the plain forward bit for bit (XLA would otherwise fuse the select with its
  neighbours and may round differently).
  """
  text = jax.lax.optimization_barrier(text)
  return text if swap is None else jax.lax.optimization_barrier(swap(text))


def gated_mlp_update(x, attn_out, mod, ff_name: str, dtype: Dtype):
  """The rest of a double-stream block for one stream: gated attention residual, modulated MLP."""
  _, _, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
  x = x + gate_msa * attn_out
  ff = layers.FeedForward(x.shape[-1], dtype=dtype, name=ff_name)
  return x + gate_mlp * ff(modulate(x, shift_mlp, scale_mlp, dtype))


class DoubleStreamBlock(nn.Module):
  """Image and text with their own weights, one joint attention (diffusers' FluxTransformerBlock)."""
  heads: int
  head_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, img, txt, temb, rope, concept=None, swap=None):
    """swap: optional fn on the attention's (B, S, D) text input (norm1_context's output)."""
    img_mod = modulation(temb, 6, "norm1.linear", self.dtype)
    txt_mod = modulation(temb, 6, "norm1_context.linear", self.dtype)
    context = attention_text_input(modulate(txt, *txt_mod[:2], self.dtype), swap)
    img_attn, txt_attn, scores = FluxAttention(self.heads, self.head_dim, self.dtype, name="attn")(
        modulate(img, *img_mod[:2], self.dtype), rope, context, concept)
    return (gated_mlp_update(img, img_attn, img_mod, "ff", self.dtype),
            gated_mlp_update(txt, txt_attn, txt_mod, "ff_context", self.dtype), scores)


class SingleStreamBlock(nn.Module):
  """Text ++ image as one sequence; parallel attention and MLP (diffusers' FluxSingleTransformerBlock)."""
  heads: int
  head_dim: int
  mlp_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, img, txt, temb, rope, concept=None, swap=None):
    """swap: optional fn on the text rows (B, S, inner) of the attention's Q, K and V, i.e. on the
    text part of its normalised joint input, as projected."""
    x = jnp.concatenate([txt, img], axis=1)
    dim, text_len = x.shape[-1], txt.shape[1]
    shift, scale, gate = modulation(temb, 3, "norm.linear", self.dtype)
    h = modulate(x, shift, scale, self.dtype)
    # [Q K V | MLP] in one matmul; the swap reaches the attention only, the MLP reads the row's own.
    mlp_params = layers.DenseParams(self.mlp_ratio * dim, name="proj_mlp")(dim)
    attn, mlp, score = FluxAttention(self.heads, self.head_dim, self.dtype, name="attn")(
        h, rope, concept=concept, text_len=text_len, swap=swap, mlp=mlp_params)
    mlp = layers.gelu_tanh(mlp)
    # proj_out on [attn | mlp], one matmul on the concatenated activations, as diffusers does. Two
    # matmuls on its two row blocks, summed, would skip that concatenation, but XLA's CPU backend
    # then rounds the sum differently in programs with and without an empty intervention (3.6e-7
    # measured), and an empty intervention must give the plain forward bit for bit
    # (tests/flux_swap_test.py).
    proj_out = layers.dense(dim, "proj_out", self.dtype)
    x = x + gate * proj_out(jnp.concatenate([attn, mlp], axis=-1))
    kernel = proj_out.variables["params"]["kernel"]
    # W_O of the attention: the rows of proj_out that read the attention heads (not the MLP). No
    # bias: proj_out's is shared with the MLP, and the attention has no to_out of its own, so the
    # paper's code applies no W_O here (its "paper" score is the one without W_O; variants.VARIANTS).
    scores = None if score is None else score(kernel[:attn.shape[-1]], None)
    return x[:, text_len:], x[:, :text_len], scores


class FluxTransformer(nn.Module):
  """FLUX.1 transformer; inputs and output as diffusers' FluxTransformer2DModel.forward.

  Args of __call__:
    hidden_states: (B, N, in_channels) packed latents (2x2 latent patches flattened by the pipeline).
    encoder_hidden_states: (B, S, joint_attention_dim) T5 states.
    pooled_projections: (B, pooled_projection_dim) pooled CLIP embedding.
    timestep: (B,) or scalar, in [0, 1] (the model multiplies by 1000, as diffusers does).
    img_ids: (N, 3) and txt_ids: (S, 3) RoPE positions.
    guidance: (B,) or scalar guidance scale, required by guidance-distilled models (dev), else None.
    text_swap: optional intervention: TextAttentionSwap (the paper's: selected blocks' attention
      reads another row's text input to it) or TextResidualSwap (a control: selected blocks'
      whole text stream replaced and carried onward).
    concept: optional (B, S) 0/1 weights on a concept's T5 tokens. When given, the call returns
      (output, scores) with scores (B, num_layers + num_single_layers, 3): each double then single
      block's joint-attention contribution of those tokens to the image tokens, one per
      variants.VARIANTS (layers.concept_scores).
    block_edit: optional BlockEdit of the image tokens' output of every double and single block
      (bypass, activation patching); the text stream is never edited.
  Returns (B, N, patch_size**2 * out_channels).
  remat: jax.checkpoint per double and single block (activations recomputed in the backward pass).
  """
  config: FluxConfig
  dtype: Dtype = jnp.float32
  remat: bool = False
  # Opt-in: round the timestep and the guidance as diffusers' FluxTransformer2DModel does in a
  # half-precision model (`timestep.to(dtype) * 1000`, `guidance.to(dtype) * 1000`, the product
  # rounded too: guidance 3.5 becomes 3504 in bf16), for users who need diffusers' bf16 outputs
  # exactly. Off by default: float32 gives 3500, closer to the float32 model (results/flux_bf16.json).
  round_conditioning: bool = False

  def embed_conditioning(self, timestep, guidance, pooled):
    """timestep (+ guidance) sinusoids through MLPs, plus the pooled text through its own MLP."""
    cfg, batch = self.config, pooled.shape[0]
    def times_1000(t):
      t = jnp.asarray(t, jnp.float32)
      if not self.round_conditioning or jnp.dtype(self.dtype) == jnp.float32:
        return t * 1000
      return round_to(self.dtype, round_to(self.dtype, t) * 1000)
    sinusoid = lambda t: layers.timestep_embedding(jnp.broadcast_to(times_1000(t), (batch,)), 256)
    mlp = lambda name: layers.TimestepEmbedding(cfg.inner_dim, self.dtype, name=f"time_text_embed.{name}")
    temb = mlp("timestep_embedder")(sinusoid(timestep))
    if cfg.guidance_embeds:
      temb = temb + mlp("guidance_embedder")(sinusoid(guidance))
    # diffusers' text_embedder (PixArtAlphaTextProjection, act "silu") is the same linear-SiLU-linear.
    return temb + mlp("text_embedder")(pooled)

  @nn.compact
  def __call__(self, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids,
               txt_ids, guidance=None, text_swap: TextAttentionSwap | TextResidualSwap | None = None,
               concept: ConceptProbe | None = None, block_edit: BlockEdit | None = None):
    cfg, dtype = self.config, self.dtype
    check_block_edit(block_edit, cfg.num_blocks)
    if cfg.guidance_embeds != (guidance is not None):
      raise ValueError("this FLUX model " + ("is guidance-distilled: pass guidance (e.g. 3.5)"
                       if cfg.guidance_embeds else "has no guidance embedding: pass guidance=None"))
    if text_swap is not None and not isinstance(text_swap, (TextAttentionSwap, TextResidualSwap)):
      raise TypeError(f"FLUX takes a TextAttentionSwap or TextResidualSwap, got {type(text_swap)}")
    if text_swap is not None and text_swap.block_mask.shape[-1] != cfg.num_blocks:
      raise ValueError(f"text_swap.block_mask needs {cfg.num_blocks} entries (double then single "
                       f"blocks), got {text_swap.block_mask.shape[-1]}")
    concept = probe_weights(concept, encoder_hidden_states.shape[1])

    img = layers.dense(cfg.inner_dim, "x_embedder", dtype)(hidden_states.astype(dtype))
    txt = layers.dense(cfg.inner_dim, "context_embedder", dtype)(encoder_hidden_states.astype(dtype))
    temb = self.embed_conditioning(timestep, guidance, pooled_projections)
    rope = layers.rope_cos_sin(jnp.concatenate([txt_ids, img_ids], axis=0), cfg.axes_dims_rope)

    double_cls, single_cls = DoubleStreamBlock, SingleStreamBlock
    if self.remat:
      double_cls, single_cls = nn.remat(DoubleStreamBlock), nn.remat(SingleStreamBlock)
    blocks = [double_cls(cfg.num_attention_heads, cfg.attention_head_dim, dtype,
                                name=f"transformer_blocks.{i}") for i in range(cfg.num_layers)]
    blocks += [single_cls(cfg.num_attention_heads, cfg.attention_head_dim, dtype=dtype,
                                 name=f"single_transformer_blocks.{i}")
               for i in range(cfg.num_single_layers)]
    block_scores = []
    for i, block in enumerate(blocks):
      swap = None
      if isinstance(text_swap, TextResidualSwap):
        txt = text_swap.text_input(i, txt)
      elif isinstance(text_swap, TextAttentionSwap):
        swap = functools.partial(text_swap.attention_text, i)
      # A fusion boundary at every block input, with or without a swap, so that compiled runs that
      # select no block give the plain forward bit for bit (XLA would otherwise fuse the select).
      out, txt, scores = block(img, jax.lax.optimization_barrier(txt), temb, rope, concept, swap)
      img = edit_block(block_edit, i, img, out)
      block_scores.append(scores)

    scale, shift = modulation(temb, 2, "norm_out.linear", dtype)  # diffusers' order: scale first
    img = modulate(img, shift, scale, dtype)
    out = layers.dense(cfg.patch_size ** 2 * cfg.output_channels, "proj_out", dtype)(img)
    return out if concept is None else (out, jnp.stack(block_scores, axis=1))
