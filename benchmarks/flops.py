"""Analytic FLOPs of a backbone's forward pass, and model FLOP utilisation (MFU) against a device's peak.

    flops.forward_flops("pixart", config, batch=2, image_tokens=4096, text_tokens=120)   # 1.31e13
    flops.mfu(flops, seconds, "NVIDIA H200", "bfloat16")                                    # 0.38

Why not XLA's cost analysis: on a GPU the matmuls and the attention run as cuBLAS/cuDNN custom calls,
which the cost analysis does not count (it reported 29 GFLOP for a 13 TFLOP PixArt forward). The
count here is 2 * m * n * k for every matrix product of the forward as dit_jax/models/*.py computes
it: linear layers, the patch-embedding conv, the caption projection, the timestep/condition MLPs
and the AdaLN modulation projections, the attention's Q K^T and A V, the feed-forward. Elementwise
work (norms, activations, softmax, RoPE, residual adds, modulation) is left out: it is a few per cent
at most and runs on the vector units, not the matrix units the peak figures are for. A depthwise
convolution counts every tap of its window at every position, padding included, as cuDNN computes
it and as torch's FLOP counter counts it. Every term scales with the batch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dit_jax import families


def linear(rows: int, n_in: int, n_out: int) -> int:
  """A (rows, n_in) @ (n_in, n_out) product."""
  return 2 * rows * n_in * n_out


def mlp(rows: int, n_in: int, width: int) -> int:
  """Linear -> activation -> Linear of equal width: TimestepEmbedding, TextProjection."""
  return linear(rows, n_in, width) + linear(rows, width, width)


def attention(queries: int, keys: int, width: int) -> int:
  """Softmax attention's two products, Q K^T and A V, summed over heads (width = heads * head_dim)."""
  return 2 * linear(queries, width, keys)


def feed_forward(rows: int, dim: int, mult: int = 4) -> int:
  return linear(rows, dim, mult * dim) + linear(rows, mult * dim, dim)


def pixart(cfg, n: int, s: int) -> int:
  d, p = cfg.inner_dim, cfg.patch_size
  embed = linear(n, p * p * cfg.in_channels, d) + mlp(1, 256, d) + linear(1, d, 6 * d)
  if cfg.additional_conditions:   # two resolution values and one aspect ratio, each to d // 3
    embed += mlp(3, 256, d // 3)
  if cfg.caption_channels is not None:
    embed += mlp(s, cfg.caption_channels, d)
  self_attention = linear(n, d, 3 * d) + attention(n, n, d) + linear(n, d, d)
  # Queries and output from the image tokens, keys and values from the caption.
  cross_attention = linear(n, d, d) + linear(s, d, 2 * d) + attention(n, s, d) + linear(n, d, d)
  block = self_attention + cross_attention + feed_forward(n, d)
  return embed + cfg.num_layers * block + linear(n, d, p * p * cfg.output_channels)


def relu_linear_attention(n: int, heads: int, head_dim: int) -> int:
  """models/sana.py's three einsums: K^T V, Q (K^T V), and the normaliser Q . sum_n K."""
  return 2 * linear(n * heads, head_dim, head_dim) + linear(n * heads, head_dim, 1)


def sana(cfg, n: int, s: int) -> int:
  d, p = cfg.inner_dim, cfg.patch_size
  cross = cfg.num_cross_attention_heads * cfg.cross_attention_head_dim
  hidden = int(cfg.mlp_ratio * d)
  conditions = 2 if cfg.guidance_embeds else 1      # timestep (+ guidance scale, Sprint)
  embed = (linear(n, p * p * cfg.in_channels, d) + conditions * mlp(1, 256, d) + linear(1, d, 6 * d)
           + mlp(s, cfg.caption_channels, d))
  self_attention = (linear(n, d, 3 * d)
                    + relu_linear_attention(n, cfg.num_attention_heads, cfg.attention_head_dim)
                    + linear(n, d, d))
  cross_attention = (linear(n, d, cross) + linear(s, d, 2 * cross) + attention(n, s, cross)
                     + linear(n, cross, d))
  # Mix-FFN: 1x1 conv to 2 * hidden, depthwise 3x3 (9 taps per channel), GLU, 1x1 conv back.
  mix_ffn = linear(n, d, 2 * hidden) + 9 * linear(n, 1, 2 * hidden) + linear(n, hidden, d)
  block = self_attention + cross_attention + mix_ffn
  return embed + cfg.num_layers * block + linear(n, d, p * p * cfg.output_channels)


def flux(cfg, n: int, s: int) -> int:
  d, t = cfg.inner_dim, n + s
  conditions = 2 if cfg.guidance_embeds else 1      # timestep (+ guidance, FLUX.1-dev)
  embed = (linear(n, cfg.in_channels, d) + linear(s, cfg.joint_attention_dim, d)
           + conditions * mlp(1, 256, d) + mlp(1, cfg.pooled_projection_dim, d))
  # Each stream its own modulation, projections and MLP; one attention over text ++ image.
  double = (2 * linear(1, d, 6 * d) + linear(t, d, 3 * d) + attention(t, t, d) + linear(t, d, d)
            + feed_forward(n, d) + feed_forward(s, d))
  # One stream: QKV and the MLP's input from the same tokens, one projection of [attention, MLP].
  single = (linear(1, d, 3 * d) + linear(t, d, 3 * d) + linear(t, d, 4 * d) + attention(t, t, d)
            + linear(t, 5 * d, d))
  out = linear(1, d, 2 * d) + linear(n, d, cfg.patch_size ** 2 * cfg.output_channels)
  return embed + cfg.num_layers * double + cfg.num_single_layers * single + out


def sd3_block(cfg, n: int, s: int, last: bool, dual: bool) -> int:
  """One joint block. The last is context_pre_only: its text is keys and values only (its queries
  are still projected, then dropped), with no text output or MLP; its text modulation is 2-way."""
  d = cfg.inner_dim
  flops = linear(1, d, (9 if dual else 6) * d) + linear(1, d, (2 if last else 6) * d)
  flops += linear(n + s, d, 3 * d) + attention(n if last else n + s, n + s, d) + linear(n, d, d)
  flops += feed_forward(n, d)
  if not last:
    flops += linear(s, d, d) + feed_forward(s, d)
  if dual:   # SD3.5 Medium's image-only attn2
    flops += linear(n, d, 3 * d) + attention(n, n, d) + linear(n, d, d)
  return flops


def sd3(cfg, n: int, s: int) -> int:
  d, p = cfg.inner_dim, cfg.patch_size
  embed = (linear(n, p * p * cfg.in_channels, d) + mlp(1, 256, d) + mlp(1, cfg.pooled_projection_dim, d)
           + linear(s, cfg.joint_attention_dim, d))
  blocks = sum(sd3_block(cfg, n, s, i == cfg.num_layers - 1, i in cfg.dual_attention_layers)
               for i in range(cfg.num_layers))
  return embed + blocks + linear(1, d, 2 * d) + linear(n, d, p * p * cfg.output_channels)


# family name -> fn(config, image tokens, text tokens) -> FLOPs of one sample's forward.
COUNTS = {"pixart": pixart, "sana": sana, "flux": flux, "sd3": sd3}


def forward_flops(family: str, config, batch: int, image_tokens: int, text_tokens: int) -> int:
  """FLOPs of one forward pass of `batch` samples of `image_tokens` patch tokens and `text_tokens`
  caption tokens. `config`: the family's config dataclass, or a diffusers config dict."""
  if family not in COUNTS:
    raise ValueError(f"no FLOP count for model family {family!r}; counted: {sorted(COUNTS)}")
  if isinstance(config, Mapping):
    config = families.get(family).config_cls.from_diffusers(dict(config))
  return batch * COUNTS[family](config, image_tokens, text_tokens)


@dataclasses.dataclass(frozen=True)
class Peak:
  match: str     # lower-case substring of the device name (torch's GPU name, jax's TPU device_kind)
  tflops: float  # dense bfloat16, no sparsity


# Peak dense bf16 TFLOP/s, first match wins (more specific names first). Vendors quote sparse
# figures too; the dense one is half of it.
PEAKS = (
    Peak("h200 nvl", 835),        # NVIDIA H200 datasheet: H200 NVL BF16 1,671 TFLOPS with sparsity
    Peak("h200", 989),            # NVIDIA H200 datasheet: H200 SXM BF16 1,979 TFLOPS with sparsity
    Peak("h100 nvl", 835),        # NVIDIA H100 datasheet: H100 NVL BF16 1,671 TFLOPS with sparsity
    Peak("h100 pcie", 756),       # NVIDIA H100 datasheet: H100 PCIe BF16 1,513 TFLOPS with sparsity
    Peak("h100 80gb hbm3", 989),  # torch's name of the H100 SXM; H100 datasheet: 1,979 with sparsity
    Peak("h100 sxm", 989),        # the same card under its product name
    Peak("a100", 312),            # NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS (SXM and PCIe)
    Peak("tpu v5 lite", 197),     # jax's device_kind of v5e; Cloud TPU docs, v5e: 197 bf16 TFLOPs
    Peak("tpu v5e", 197),
    Peak("tpu v5p", 459),         # Cloud TPU docs, v5p: 459 bf16 TFLOPs per chip
    Peak("tpu v5", 459),          # jax's device_kind of v5p (v5 lite matched above)
    Peak("tpu v4", 275),          # Cloud TPU docs, v4: 275 bf16 TFLOPs per chip
)


def peak_tflops(device: str, dtype: str = "bfloat16") -> float | None:
  """The device's peak dense bf16 TFLOP/s; None for a device not in PEAKS, or for a run in another
  dtype (a float32 run measured against the bf16 peak would be a wrong figure, not a low one)."""
  if dtype != "bfloat16":
    return None
  name = device.lower()
  return next((p.tflops for p in PEAKS if p.match in name), None)


def mfu(flops: float, seconds: float, device: str, dtype: str = "bfloat16") -> float | None:
  """Model FLOP utilisation: achieved FLOP/s over the device's peak; None where the peak is unknown."""
  peak = peak_tflops(device, dtype)
  return None if peak is None else flops / seconds / (peak * 1e12)
