"""SANA transformer in Flax (diffusers' SanaTransformer2DModel): SANA, SANA-1.5 and SANA-Sprint.

    latents -> patches (+ sin-cos positions on the 2K/4K models)
    timestep (+ guidance scale, Sprint) -> AdaLN-single
    caption -> MLP projection -> RMSNorm
      -> N x [AdaLN-single linear self-attention (ReLU kernels, cost linear in tokens),
              cross-attention to the caption,
              AdaLN-single Mix-FFN on the 2D token grid:
                1x1 conv -> SiLU -> depthwise 3x3 conv -> GLU(SiLU) -> 1x1 conv]
      -> AdaLN final layer -> unpatchify

There are no positions in the 512/1024px models: the depthwise conv of the Mix-FFN is what tells
tokens where they are. Interventions enter as explicit arguments, as in PixArt.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from dit_jax.models import layers
from dit_jax.models.base import DiffusersConfig
from dit_jax.models.interventions import (BlockEdit, ConceptProbe, TextSwap, check_block_edit,
                                          cross_attention_inputs, edit_block, probe_weights, select)
# SANA's timestep embedding without guidance is PixArt's AdaLN-single (no size conditions).
from dit_jax.models.pixart import AdaLayerNormSingle

Dtype = Any

QK_NORM = "rms_norm_across_heads"   # SANA-1.5 and Sprint; the only q/k norm SANA checkpoints use


@dataclasses.dataclass(frozen=True)
class SanaConfig(DiffusersConfig):
  """The fields of diffusers' SanaTransformer2DModel config (defaults: Sana_1600M_1024px).

  timestep_scale and guidance_embeds_scale are kept for the pipeline, which multiplies the timestep
  and the guidance scale by them before calling the network; the network itself does not read them.
  """
  in_channels: int = 32
  out_channels: int | None = 32
  num_attention_heads: int = 70
  attention_head_dim: int = 32
  num_layers: int = 20
  num_cross_attention_heads: int = 20
  cross_attention_head_dim: int = 112
  cross_attention_dim: int = 2240
  caption_channels: int = 2304
  mlp_ratio: float = 2.5
  dropout: float = 0.0
  attention_bias: bool = False
  sample_size: int = 32
  patch_size: int = 1
  norm_elementwise_affine: bool = False
  norm_eps: float = 1e-6
  interpolation_scale: float | None = None     # None: no positional embedding (diffusers' rule)
  guidance_embeds: bool = False
  guidance_embeds_scale: float = 0.1
  qk_norm: str | None = None
  timestep_scale: float = 1.0

  def __post_init__(self):
    if self.dropout != 0:
      raise ValueError(f"SANA config has dropout={self.dropout}; only inference (dropout 0) is supported")
    if self.qk_norm not in (None, QK_NORM):
      raise ValueError(f"SANA config has qk_norm={self.qk_norm!r}; only None and {QK_NORM!r} are supported")
    if self.cross_attention_dim != self.inner_dim:
      # The caption is projected to inner_dim before the cross-attention reads it.
      raise ValueError("SANA needs cross_attention_dim == num_attention_heads * attention_head_dim "
                       f"= {self.inner_dim}, got {self.cross_attention_dim}")


def relu_linear_attention(q, k, v, eps: float = 1e-15):
  """out_i = sum_j (q_i . k_j) v_j / (sum_j q_i . k_j + eps) with q, k through ReLU; (B, N, heads, d).

  Float32 throughout, as diffusers does: the sums over all tokens overflow half precision. HIGHEST
  precision keeps GPUs from using TF32 for these float32 contractions.
  """
  q, k, v = jax.nn.relu(q).astype(jnp.float32), jax.nn.relu(k).astype(jnp.float32), v.astype(jnp.float32)
  einsum = lambda spec, a, b: jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)
  kv = einsum("bnhd,bnhe->bhde", k, v)
  numerator = einsum("bnhd,bhde->bnhe", q, kv)
  denominator = einsum("bnhd,bhd->bnh", q, k.sum(axis=1))
  return numerator / (denominator[..., None] + eps)


class SanaAttention(nn.Module):
  """diffusers' Attention as SANA sets it up: to_q/to_k/to_v, optional RMS norm of q and k across
  heads (norm_q, norm_k), then linear attention (`linear`, self-attention) or softmax attention with
  an additive key bias (cross-attention), then to_out.0 (always with bias)."""
  heads: int
  head_dim: int
  linear: bool
  qkv_bias: bool = True
  qk_norm: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, bias=None, concept=None):
    inner = self.heads * self.head_dim
    context = x if context is None else context
    # One matmul for Q, K and V of the self-attention, one for K and V of the cross-attention.
    q, k, v = layers.project([("to_q", inner, x), ("to_k", inner, context), ("to_v", inner, context)],
                             self.dtype, self.qkv_bias)
    if self.qk_norm:   # eps 1e-5: diffusers' Attention default
      q = layers.RMSNorm(1e-5, dtype=self.dtype, name="norm_q")(q)
      k = layers.RMSNorm(1e-5, dtype=self.dtype, name="norm_k")(k)
    q, k, v = (t.reshape(*t.shape[:-1], self.heads, self.head_dim) for t in (q, k, v))
    if self.linear:
      out = relu_linear_attention(q, k, v).astype(self.dtype)
    else:
      out = layers.dot_product_attention(q, k, v, bias)
    to_out = layers.dense(x.shape[-1], "to_out.0", self.dtype)
    out = to_out(out.reshape(*out.shape[:-2], inner))
    if concept is None:
      return out
    return out, layers.concept_scores(q, k, v, bias, concept, *layers.output_projection(to_out))


class GLUMBConv(nn.Module):
  """Mix-FFN on a (B, h, w, C) token grid; the gate half of the depthwise conv goes through SiLU."""
  features: int
  hidden: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    wide = 2 * self.hidden
    x = nn.silu(nn.Conv(wide, (1, 1), dtype=self.dtype, name="conv_inverted")(x))
    x = nn.Conv(wide, (3, 3), padding=1, feature_group_count=wide, dtype=self.dtype,
                name="conv_depth")(x)
    x, gate = jnp.split(x, 2, axis=-1)
    return nn.Conv(self.features, (1, 1), use_bias=False, dtype=self.dtype,
                   name="conv_point")(x * nn.silu(gate))


class SanaTimestepGuidanceEmbedding(nn.Module):
  """SANA-Sprint's AdaLN-single: timestep and guidance-scale embeddings, summed, then the 6-way
  projection. Returns (modulation, embedding) like AdaLayerNormSingle."""
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, timestep, guidance):
    def embed(values, name):
      return layers.TimestepEmbedding(self.dim, self.dtype, name=name)(
          layers.timestep_embedding(values, 256))
    t = embed(timestep, "timestep_embedder") + embed(guidance, "guidance_embedder")
    return layers.dense(6 * self.dim, "linear", self.dtype)(nn.silu(t)), t


class SanaBlock(nn.Module):
  """One SANA block: modulated linear self-attention, plain cross-attention, modulated Mix-FFN."""
  config: SanaConfig
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context, context_bias, t_mod, grid, concept=None):
    cfg, dtype = self.config, self.dtype
    dim = cfg.inner_dim
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = layers.adaln_modulation(
        self, t_mod, 6, dim, dtype)
    qk_norm = cfg.qk_norm is not None

    h = layers.layer_norm(dtype, cfg.norm_eps, name="norm1")(x) * (1 + scale_msa) + shift_msa
    x = x + gate_msa * SanaAttention(cfg.num_attention_heads, cfg.attention_head_dim, linear=True,
                                     qkv_bias=cfg.attention_bias, qk_norm=qk_norm, dtype=dtype,
                                     name="attn1")(h)
    cross = SanaAttention(cfg.num_cross_attention_heads, cfg.cross_attention_head_dim, linear=False,
                          qk_norm=qk_norm, dtype=dtype, name="attn2")(x, context, context_bias, concept)
    cross, scores = cross if concept is not None else (cross, None)
    x = x + cross
    h = layers.layer_norm(dtype, cfg.norm_eps, cfg.norm_elementwise_affine, name="norm2")(x)
    h = h * (1 + scale_mlp) + shift_mlp
    b, n, _ = h.shape
    ff = GLUMBConv(dim, int(cfg.mlp_ratio * dim), dtype, name="ff")(h.reshape(b, *grid, dim))
    return x + gate_mlp * ff.reshape(b, n, dim), scores


class SanaTransformer(nn.Module):
  """SANA DiT. Latents are NHWC; returns NHWC (B, H, W, out_channels).

  Args of __call__:
    latents: (B, H, W, in_channels); H and W multiples of patch_size, any aspect ratio.
    timestep: (B,) timesteps as the network sees them (the pipeline has applied timestep_scale).
    caption: (B, S, caption_channels) text-encoder (Gemma) states.
    caption_mask: (B, S) 0/1 mask of valid caption tokens, or None.
    guidance: (B,) guidance scale times guidance_embeds_scale, for guidance-embedded (Sprint) models.
    text_swap: optional TextSwap intervention.
    block_edit: optional BlockEdit of the blocks' outputs (bypass, activation patching).
    concept: optional (B, S) 0/1 weights on a concept's caption tokens; then the call returns
      (output, scores (B, num_layers, 3)), as PixArtTransformer does.
  remat: jax.checkpoint per block (activations recomputed in the backward pass).
  """
  config: SanaConfig
  dtype: Dtype = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(self, latents, timestep, caption, caption_mask=None, guidance=None,
               text_swap: TextSwap | None = None, concept: ConceptProbe | None = None,
               block_edit: BlockEdit | None = None, caption_embedded: bool = False):
    cfg, dtype = self.config, self.dtype
    concept = probe_weights(concept, caption.shape[1])
    check_block_edit(block_edit, cfg.num_blocks)
    p, dim = cfg.patch_size, cfg.inner_dim
    h, w = layers.patch_grid(latents, cfg.in_channels, p)
    if cfg.guidance_embeds != (guidance is not None):
      raise ValueError("pass guidance (B,) exactly when the model has guidance_embeds "
                       f"(this one: {cfg.guidance_embeds})")

    x = layers.PatchEmbed(dim, p, cfg.sample_size // p, cfg.interpolation_scale or 1.0,
                          use_pos_embed=cfg.interpolation_scale is not None, dtype=dtype,
                          name="patch_embed")(latents)
    if cfg.guidance_embeds:
      t_mod, t_emb = SanaTimestepGuidanceEmbedding(dim, dtype, name="time_embed")(timestep, guidance)
    else:
      t_mod, t_emb = AdaLayerNormSingle(dim, False, dtype, name="time_embed")(timestep)

    # One projection and norm for both captions, so a swapped caption is embedded the same way.
    project = layers.TextProjection(dim, dtype, name="caption_projection")
    caption_norm = layers.RMSNorm(1e-5, dtype=dtype, name="caption_norm")
    embed = lambda c, mask: (c if caption_embedded else caption_norm(project(c)), layers.key_mask(mask))
    own, swapped, block_mask = cross_attention_inputs(embed, caption, caption_mask, text_swap)

    # The patch grid (argument 5, counting self) is static: it shapes the Mix-FFN's convolution.
    block_cls = nn.remat(SanaBlock, static_argnums=(5,)) if self.remat else SanaBlock
    block_scores = []
    for i in range(cfg.num_layers):
      context, context_bias = select(block_mask, i, swapped, own)
      out, scores = block_cls(cfg, dtype, name=f"transformer_blocks.{i}")(
          x, context, context_bias, t_mod, (h, w), concept)
      x = edit_block(block_edit, i, x, out)
      block_scores.append(scores)

    x = layers.adaln_output(self, x, t_emb, p * p * cfg.output_channels, dtype)
    out = layers.unpatchify(x, h, w, p, cfg.output_channels)
    return out if concept is None else (out, jnp.stack(block_scores, axis=1))

  embeds_captions = True   # captions go through embed_caption's layers before the blocks

  @nn.nowrap   # unwrapped: the layers it builds must not attach to this (unbound) module
  def embed_caption(self, params, caption):
    """The caption path alone (projection, then RMSNorm): what caption_embedded=True takes instead
    of the text-encoder states, so a sampling loop computes it once, not at every step."""
    projected = layers.TextProjection(self.config.inner_dim, self.dtype).apply(
        {"params": params["caption_projection"]}, caption)
    return layers.RMSNorm(1e-5, dtype=self.dtype).apply({"params": params["caption_norm"]}, projected)
