"""Stable Diffusion 3 / 3.5 transformer (MMDiT) in Flax (diffusers' SD3Transformer2DModel).

    latents -> pos_embed (2x2 patch conv + cropped sin-cos table) --\
    CLIP ++ T5 states -> context_embedder -------------------------- N x joint block --> image tokens
    timestep + pooled CLIP -> temb (modulates every block)                                  |
                                  unpatchify <- proj_out <- AdaLN-continuous norm <---------/

Joint block (diffusers' JointTransformerBlock): image and text each have their own AdaLN-zero
modulation, QKV projections (RMS-normed queries and keys with qk_norm="rms_norm", SD3.5), output
projection and MLP, and attend jointly (image tokens first, then text). SD3.5 Medium's early blocks
("dual_attention_layers") add an image-only self-attention (attn2) from a second modulation of the
same normalised input. The last block is context_pre_only: its text only serves as keys and values
(the text stream ends there), and its text modulation is AdaLN-continuous.

The module holds only the network. The intervention of the localization study enters as an explicit
`text_swap` argument (TextAttentionSwap, as in FLUX): in each selected block the joint attention of
row b reads row source[b]'s normalised, modulated text input (norm1_context's output, which the
context_pre_only last block has too); the row keeps its own text residual stream. Concept scores
(docs/design.md, "The method") come out of every block's joint attention with the formula of the
other families (layers.concept_scores): image-token queries, softmax over image and text keys.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dit_jax.models import layers
from dit_jax.models.interventions import (BlockEdit, ConceptProbe, TextAttentionSwap,
                                          check_block_edit, edit_block, probe_weights)
from dit_jax.models.base import DiffusersConfig
# The same AdaLN helpers (LayerNorm eps 1e-6, SiLU -> Linear modulation) and swap boundary as FLUX's.
from dit_jax.models.flux import NORM_EPS, attention_text_input, gated_mlp_update, modulate, modulation

Dtype = Any


@dataclasses.dataclass(frozen=True)
class SD3Config(DiffusersConfig):
  """The fields of diffusers' SD3Transformer2DModel config (defaults: diffusers')."""
  sample_size: int = 128
  patch_size: int = 2
  in_channels: int = 16
  num_layers: int = 18
  attention_head_dim: int = 64
  num_attention_heads: int = 18
  joint_attention_dim: int = 4096
  caption_projection_dim: int = 1152
  pooled_projection_dim: int = 2048
  out_channels: int | None = 16
  pos_embed_max_size: int | None = 96
  dual_attention_layers: tuple[int, ...] = ()   # SD3.5 Medium: blocks with the extra attn2
  qk_norm: str | None = None                    # SD3.5: "rms_norm"

  def __post_init__(self):
    object.__setattr__(self, "dual_attention_layers", tuple(self.dual_attention_layers))  # JSON: list
    if self.qk_norm not in (None, "rms_norm"):
      raise ValueError(f"SD3Config: qk_norm={self.qk_norm!r} is not supported (None or 'rms_norm')")
    if self.caption_projection_dim != self.inner_dim:
      raise ValueError(f"caption_projection_dim={self.caption_projection_dim} must equal the width "
                       f"{self.inner_dim}: the text joins the image in one attention")


class SD3Attention(nn.Module):
  """Attention with diffusers' SD3 names; optional RMS-normed queries and keys (norm_q, norm_k).

  With `context`, the joint attention of a joint block: the text has its own projections
  (add_*_proj, norm_added_*, to_add_out unless context_pre_only) and joins after the image tokens;
  returns (image, text or None, scores or None). Without, image self-attention (attn2); returns the
  image output. `concept` ((B, S) weights over the text tokens) adds the concept's contribution to
  the image tokens, one score per variants.VARIANTS (layers.concept_scores).
  """
  heads: int
  head_dim: int
  qk_norm: bool
  context_pre_only: bool = False
  dtype: Dtype = jnp.float32

  def project(self, x, names, norms):
    inner = self.heads * self.head_dim
    # One matmul for the three (fused_dense).
    q, k, v = (t.reshape(*x.shape[:-1], self.heads, self.head_dim)
               for t in layers.project([(name, inner, x) for name in names], self.dtype))
    if self.qk_norm:
      q, k = (layers.RMSNorm(NORM_EPS, dtype=self.dtype, name=name)(t) for name, t in zip(norms, (q, k)))
    return q, k, v

  @nn.compact
  def __call__(self, x, context=None, concept=None):
    n, dim = x.shape[1], x.shape[-1]
    q, k, v = self.project(x, ("to_q", "to_k", "to_v"), ("norm_q", "norm_k"))
    if context is not None:
      text = self.project(context, ("add_q_proj", "add_k_proj", "add_v_proj"),
                          ("norm_added_q", "norm_added_k"))
      q, k, v = (jnp.concatenate([i, t], axis=1) for i, t in zip((q, k, v), text))
      if self.context_pre_only:
        q = q[:, :n]   # the text's attention outputs are never used
    out = layers.dot_product_attention(q, k, v)
    out = out.reshape(*out.shape[:2], self.heads * self.head_dim)
    to_out = layers.dense(dim, "to_out.0", self.dtype)
    if context is None:
      return to_out(out)
    txt_out = None if self.context_pre_only else layers.dense(dim, "to_add_out", self.dtype)(out[:, n:])
    img_out, scores = to_out(out[:, :n]), None
    if concept is not None:
      weights = jnp.pad(concept, ((0, 0), (n, 0)))   # no image key is the concept
      # SD3 is not in the paper: its "paper" score applies to_out.0 with its bias, as the paper's
      # code does in FLUX's double blocks, the joint attention SD3's joint blocks share.
      scores = layers.concept_scores(q[:, :n], k, v, None, weights, *layers.output_projection(to_out))
    return img_out, txt_out, scores


class JointBlock(nn.Module):
  """diffusers' JointTransformerBlock (MMDiT)."""
  heads: int
  head_dim: int
  qk_norm: bool
  context_pre_only: bool
  dual_attention: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, img, txt, temb, concept=None, swap=None):
    """swap: optional fn on the attention's (B, S, D) text input (norm1_context's output)."""
    dtype = self.dtype
    attention = functools.partial(SD3Attention, self.heads, self.head_dim, self.qk_norm, dtype=dtype)
    img_mod = modulation(temb, 9 if self.dual_attention else 6, "norm1.linear", dtype)
    if self.context_pre_only:   # AdaLN-continuous: (scale, shift), in diffusers' order
      scale, shift = modulation(temb, 2, "norm1_context.linear", dtype)
      context = modulate(txt, shift, scale, dtype)
    else:
      txt_mod = modulation(temb, 6, "norm1_context.linear", dtype)
      context = modulate(txt, *txt_mod[:2], dtype)
    img_attn, txt_attn, scores = attention(context_pre_only=self.context_pre_only, name="attn")(
        modulate(img, *img_mod[:2], dtype), attention_text_input(context, swap), concept)
    x = img + img_mod[2] * img_attn
    if self.dual_attention:   # a second modulation of the block's input, its own gated residual
      shift2, scale2, gate2 = img_mod[6:]
      x = x + gate2 * attention(name="attn2")(modulate(img, shift2, scale2, dtype))
    _, _, _, shift_mlp, scale_mlp, gate_mlp = img_mod[:6]
    x = x + gate_mlp * layers.FeedForward(x.shape[-1], dtype=dtype, name="ff")(
        modulate(x, shift_mlp, scale_mlp, dtype))
    if self.context_pre_only:
      return x, None, scores
    return x, gated_mlp_update(txt, txt_attn, txt_mod, "ff_context", dtype), scores


class SD3Transformer(nn.Module):
  """SD3 / SD3.5 transformer; inputs and output as diffusers' SD3Transformer2DModel.forward, NHWC.

  Args of __call__:
    hidden_states: (B, H, W, in_channels) latents.
    encoder_hidden_states: (B, S, joint_attention_dim): CLIP-L ++ CLIP-G states (zero-padded to
      the T5 width) for the CLIP tokens, then the T5 states, as StableDiffusion3Pipeline joins them.
    pooled_projections: (B, pooled_projection_dim) pooled CLIP-L ++ CLIP-G vectors.
    timestep: (B,) or scalar, the scheduler's timestep (sigma * 1000), as the pipeline passes it.
    text_swap: optional TextAttentionSwap: selected blocks' joint attention reads another row's
      text input to it.
    block_edit: optional BlockEdit of every block's image-token output (bypass, activation
      patching); the text stream is never edited.
    concept: optional ConceptProbe, (B, S) weights on a concept's text tokens. When given, the call returns
      (output, scores) with scores (B, num_layers, 3): each block's joint-attention contribution of
      those tokens to the image tokens, one per variants.VARIANTS (layers.concept_scores).
  Returns (B, H, W, out_channels).
  """
  config: SD3Config
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, hidden_states, encoder_hidden_states, pooled_projections, timestep,
               text_swap: TextAttentionSwap | None = None,
               concept: ConceptProbe | None = None, block_edit: BlockEdit | None = None):
    cfg, dtype = self.config, self.dtype
    check_block_edit(block_edit, cfg.num_blocks)
    if text_swap is not None and not isinstance(text_swap, TextAttentionSwap):
      raise TypeError(f"SD3 takes a TextAttentionSwap, got {type(text_swap)}")
    if text_swap is not None and text_swap.block_mask.shape[-1] != cfg.num_blocks:
      raise ValueError(f"text_swap.block_mask needs {cfg.num_blocks} entries, got "
                       f"{text_swap.block_mask.shape[-1]}")
    concept = probe_weights(concept, encoder_hidden_states.shape[1])
    p = cfg.patch_size
    h, w = layers.patch_grid(hidden_states, cfg.in_channels, p)
    img = layers.PatchEmbed(cfg.inner_dim, p, cfg.sample_size // p, 1.0, dtype=dtype,
                            pos_embed_max_size=cfg.pos_embed_max_size, name="pos_embed")(hidden_states)
    timestep = jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (img.shape[0],))
    sinusoid = layers.timestep_embedding(timestep, 256)
    embed = lambda name: layers.TimestepEmbedding(cfg.inner_dim, dtype, name=f"time_text_embed.{name}")
    # diffusers' text_embedder (PixArtAlphaTextProjection, act "silu") is the same linear-SiLU-linear.
    temb = embed("timestep_embedder")(sinusoid) + embed("text_embedder")(pooled_projections)
    txt = layers.dense(cfg.caption_projection_dim, "context_embedder", dtype)(
        encoder_hidden_states.astype(dtype))

    block_scores = []
    for i in range(cfg.num_layers):
      block = JointBlock(cfg.num_attention_heads, cfg.attention_head_dim, cfg.qk_norm is not None,
                         context_pre_only=i == cfg.num_layers - 1,
                         dual_attention=i in cfg.dual_attention_layers, dtype=dtype,
                         name=f"transformer_blocks.{i}")
      swap = None if text_swap is None else functools.partial(text_swap.attention_text, i)
      # A fusion boundary at every block input, with or without a swap, so that compiled runs that
      # select no block give the plain forward bit for bit.
      out, txt, scores = block(img, jax.lax.optimization_barrier(txt), temb, concept, swap)
      img = edit_block(block_edit, i, img, out)
      block_scores.append(scores)

    scale, shift = modulation(temb, 2, "norm_out.linear", dtype)   # diffusers' order: scale first
    img = modulate(img, shift, scale, dtype)
    out = layers.dense(p * p * cfg.output_channels, "proj_out", dtype)(img)
    out = layers.unpatchify(out, h, w, p, cfg.output_channels)
    return out if concept is None else (out, jnp.stack(block_scores, axis=1))
