"""PixArt-alpha / PixArt-Sigma transformer in Flax (diffusers' PixArtTransformer2DModel).

    patches + sin-cos positions -> 28 x [AdaLN-single self-attn, cross-attn to T5, AdaLN-single MLP]
    -> AdaLN final layer -> unpatchify

The module holds only the network. A text-swap intervention (docs/design.md, "The method") enters as an
explicit argument, so jax.vmap over block selections gives a whole sweep in one compiled call.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import flax.linen as nn

from dit_jax.models import layers
from dit_jax.models.base import DiffusersConfig
from dit_jax.models.interventions import (BlockEdit, ConceptProbe, TextSwap, check_block_edit,
                                          cross_attention_inputs, edit_block, probe_weights, select)

Dtype = Any


@dataclasses.dataclass(frozen=True)
class PixArtConfig(DiffusersConfig):
  """The fields of diffusers' PixArtTransformer2DModel config that change the network."""
  num_attention_heads: int = 16
  attention_head_dim: int = 72
  in_channels: int = 4
  out_channels: int | None = 8
  num_layers: int = 28
  cross_attention_dim: int = 1152
  sample_size: int = 128
  patch_size: int = 2
  caption_channels: int | None = 4096
  interpolation_scale: float | None = None
  use_additional_conditions: bool | None = None
  norm_eps: float = 1e-6

  FIXED = {"norm_type": "ada_norm_single", "activation_fn": "gelu-approximate",
           "attention_bias": True, "norm_elementwise_affine": False, "upcast_attention": False,
           "attention_type": "default", "num_embeds_ada_norm": 1000, "dropout": 0.0}

  def __post_init__(self):
    if self.cross_attention_dim != self.inner_dim:
      raise ValueError("PixArt needs cross_attention_dim == num_attention_heads * attention_head_dim"
                       f" = {self.inner_dim}, got {self.cross_attention_dim}")

  @property
  def additional_conditions(self) -> bool:
    # diffusers' rule: on by default only for the 1024px (sample_size 128) models.
    if self.use_additional_conditions is None:
      return self.sample_size == 128
    return self.use_additional_conditions

  @property
  def pos_interpolation_scale(self) -> float:
    if self.interpolation_scale is None:
      return max(self.sample_size // 64, 1)
    return self.interpolation_scale


class AdaLayerNormSingle(nn.Module):
  """Timestep (+ resolution and aspect-ratio) embedding shared by all blocks, and its 6-way projection."""
  dim: int
  additional_conditions: bool
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, timestep, resolution=None, aspect_ratio=None):
    emb = layers.TimestepEmbedding
    t = emb(self.dim, self.dtype, name="emb.timestep_embedder")(
        layers.timestep_embedding(timestep, 256))
    if self.additional_conditions:
      if resolution is None or aspect_ratio is None:
        raise ValueError("this PixArt model uses additional conditions: pass resolution (B, 2) "
                         "and aspect_ratio (B, 1)")
      size_dim = self.dim // 3
      b = timestep.shape[0]
      res = emb(size_dim, self.dtype, name="emb.resolution_embedder")(
          layers.timestep_embedding(resolution.reshape(-1), 256)).reshape(b, -1)
      ar = emb(size_dim, self.dtype, name="emb.aspect_ratio_embedder")(
          layers.timestep_embedding(aspect_ratio.reshape(-1), 256)).reshape(b, -1)
      t = t + jnp.concatenate([res, ar], axis=1)
    return layers.dense(6 * self.dim, "linear", self.dtype)(nn.silu(t)), t


class PixArtBlock(nn.Module):
  """One PixArt block: modulated self-attention, plain cross-attention, modulated MLP."""
  heads: int
  head_dim: int
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context, context_bias, t_mod, concept=None):
    dim = self.heads * self.head_dim
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = layers.adaln_modulation(
        self, t_mod, 6, dim, self.dtype)

    h = layers.layer_norm(self.dtype, self.eps, name="norm1")(x) * (1 + scale_msa) + shift_msa
    x = x + gate_msa * layers.Attention(self.heads, self.head_dim, dtype=self.dtype, name="attn1")(h)
    # PixArt applies no norm before the cross-attention (diffusers' "ada_norm_single" branch).
    cross = layers.Attention(self.heads, self.head_dim, dtype=self.dtype, name="attn2")(
        x, context, context_bias, concept)
    cross, scores = cross if concept is not None else (cross, None)
    x = x + cross
    h = layers.layer_norm(self.dtype, self.eps, name="norm2")(x) * (1 + scale_mlp) + shift_mlp
    return x + gate_mlp * layers.FeedForward(dim, dtype=self.dtype, name="ff")(h), scores


class PixArtTransformer(nn.Module):
  """PixArt-alpha/Sigma DiT. Latents are NHWC; returns NHWC (B, H, W, out_channels).

  Args of __call__:
    latents: (B, H, W, in_channels); H and W multiples of patch_size, any aspect ratio.
    timestep: (B,) diffusion timesteps (0..999, may be fractional).
    caption: (B, S, caption_channels) text-encoder states.
    caption_mask: (B, S) 0/1 mask of valid caption tokens, or None.
    resolution, aspect_ratio: (B, 2) and (B, 1) micro-conditions, for models that use them.
    text_swap: optional TextSwap intervention.
    block_edit: optional BlockEdit of the blocks' outputs (bypass, activation patching).
    concept: optional (B, S) 0/1 weights on the caption tokens of a concept. When given, the call
      returns (output, scores) with scores (B, num_layers, 3): each block's cross-attention
      contribution of those tokens, one per variants.VARIANTS (layers.concept_scores).
  remat: recompute each block's activations in the backward pass (jax.checkpoint per block),
    trading compute for the memory of a training step; the parameters are the same.
  """
  config: PixArtConfig
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, latents, timestep, caption, caption_mask=None, resolution=None,
               aspect_ratio=None, text_swap: TextSwap | None = None,
               concept: ConceptProbe | None = None, block_edit: BlockEdit | None = None,
               caption_embedded: bool = False):
    cfg, dtype = self.config, self.dtype
    concept = probe_weights(concept, caption.shape[1])
    check_block_edit(block_edit, cfg.num_blocks)
    p = cfg.patch_size
    h, w = layers.patch_grid(latents, cfg.in_channels, p)

    x = layers.PatchEmbed(cfg.inner_dim, p, cfg.sample_size // p, cfg.pos_interpolation_scale,
                          dtype=dtype, name="pos_embed")(latents)
    t_mod, t_emb = AdaLayerNormSingle(cfg.inner_dim, cfg.additional_conditions, dtype,
                                      name="adaln_single")(timestep, resolution, aspect_ratio)

    project = lambda c: c.astype(dtype)
    if cfg.caption_channels is not None and not caption_embedded:
      project = layers.TextProjection(cfg.inner_dim, dtype, name="caption_projection")
    embed = lambda c, mask: (project(c), layers.key_mask(mask))
    own, swapped, block_mask = cross_attention_inputs(embed, caption, caption_mask, text_swap)

    block_cls = nn.remat(PixArtBlock) if self.remat else PixArtBlock
    block_scores = []
    for i in range(cfg.num_layers):
      context, context_bias = select(block_mask, i, swapped, own)
      out, scores = block_cls(cfg.num_attention_heads, cfg.attention_head_dim, cfg.norm_eps, dtype,
                              name=f"transformer_blocks.{i}")(x, context, context_bias, t_mod, concept)
      x = edit_block(block_edit, i, x, out)
      block_scores.append(scores)

    x = layers.adaln_output(self, x, t_emb, p * p * cfg.output_channels, dtype)
    out = layers.unpatchify(x, h, w, p, cfg.output_channels)
    return out if concept is None else (out, jnp.stack(block_scores, axis=1))

  @property
  def embeds_captions(self) -> bool:
    """Whether captions go through layers of their own (embed_caption) before the blocks."""
    return self.config.caption_channels is not None

  @nn.nowrap   # unwrapped: the projection it builds must not attach to this (unbound) module
  def embed_caption(self, params, caption):
    """The caption path alone (what caption_embedded=True takes instead of the text-encoder
    states), so a sampling loop computes it once, not at every step."""
    project = layers.TextProjection(self.config.inner_dim, self.dtype)
    return project.apply({"params": params["caption_projection"]}, caption)
