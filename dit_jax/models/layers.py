"""Building blocks shared by the DiT backbones.

Module and parameter names follow diffusers' PyTorch modules one to one (a Flax path joined with "."
is the diffusers state-dict key, up to the leaf name), so that one generic rule
(ports/checkpoints.py) converts every backbone. Activations are in `dtype`; parameters keep whatever dtype they were loaded in.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from dit_jax.models.variants import VARIANTS

Dtype = Any

# diffusers turns a 0/1 attention mask into this additive bias; we use the same number so that a
# fully masked row behaves the same way in both.
MASK_BIAS = -10000.0


def dense(features: int, name: str, dtype: Dtype, use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name)


def layer_norm(dtype: Dtype, eps: float = 1e-6, affine: bool = False, name: str | None = None):
  return nn.LayerNorm(epsilon=eps, use_bias=affine, use_scale=affine, dtype=dtype, name=name)


def gelu_tanh(x):
  return jax.nn.gelu(x, approximate=True)


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool = True,
                       downscale_freq_shift: float = 0.0, scale: float = 1.0,
                       max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding of (fractional) timesteps, float32, as diffusers' get_timestep_embedding."""
  half = dim // 2
  # The frequency table is static: computed in NumPy (float32 exponent as torch builds it, exp in
  # float64, rounded once), so it is correctly rounded on every machine. jnp.exp is one ulp off for
  # some entries, and so is torch.exp, by an amount that depends on the CPU (it goes through MKL):
  # one ulp is visible at FLUX's guidance x 1000.
  exponent = (np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
              / np.float32(half - downscale_freq_shift))
  freqs = jnp.asarray(np.exp(exponent.astype(np.float64)).astype(np.float32))
  args = scale * (t.astype(jnp.float32)[:, None] * freqs[None, :])
  emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
  if flip_sin_to_cos:
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """linear_1 -> SiLU -> linear_2 (diffusers' TimestepEmbedding)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = dense(self.features, "linear_1", self.dtype)(x.astype(self.dtype))
    return dense(self.features, "linear_2", self.dtype)(nn.silu(x))


def sincos_pos_embed_2d(embed_dim: int, grid_h: int, grid_w: int, base_size: int,
                        interpolation_scale: float) -> np.ndarray:
  """2D sin-cos positions of a grid_h x grid_w patch grid, shape (grid_h * grid_w, embed_dim).

  Computed in float64 with NumPy at trace time (shapes are static), then rounded to float32, exactly
  as diffusers' get_2d_sincos_pos_embed. The first half of the channels encodes the column, the
  second half the row, and positions are rescaled so that a grid of `base_size` spans [0, base_size).
  """
  if embed_dim % 4:
    raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
  rows = np.arange(grid_h, dtype=np.float32) / (grid_h / base_size) / interpolation_scale
  cols = np.arange(grid_w, dtype=np.float32) / (grid_w / base_size) / interpolation_scale
  col_grid, row_grid = np.meshgrid(cols, rows, indexing="xy")  # both (grid_h, grid_w)

  def encode(pos):
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0))
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([encode(col_grid), encode(row_grid)], axis=1).astype(np.float32)


class PatchEmbed(nn.Module):
  """Non-overlapping p x p patches (a strided conv named `proj`) plus 2D sin-cos positions.

  Input NHWC, output (B, h * w, embed_dim) in row-major patch order. Positions are recomputed for the
  actual grid when it differs from the trained one (diffusers' interpolation behaviour), or, with
  pos_embed_max_size (SD3), cropped from the centre of a stored (1, M * M, D) table: the
  `pos_embed` parameter, which checkpoints carry.
  """
  embed_dim: int
  patch_size: int
  base_size: int              # patches per side at the trained resolution
  interpolation_scale: float
  use_pos_embed: bool = True
  dtype: Dtype = jnp.float32
  pos_embed_max_size: int | None = None

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                name="proj")(x.astype(self.dtype))
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)
    if not self.use_pos_embed:
      return x
    if self.pos_embed_max_size is None:
      pos = sincos_pos_embed_2d(d, h, w, self.base_size, self.interpolation_scale)
      return x + jnp.asarray(pos, self.dtype)[None]
    m = self.pos_embed_max_size
    table = self.param("pos_embed", lambda key: jnp.asarray(
        sincos_pos_embed_2d(d, m, m, self.base_size, self.interpolation_scale))[None])
    if h > m or w > m:
      raise ValueError(f"a {h}x{w} patch grid exceeds pos_embed_max_size={m}")
    top, left = (m - h) // 2, (m - w) // 2
    pos = table.reshape(m, m, d)[top:top + h, left:left + w].reshape(1, h * w, d)
    return x + pos.astype(self.dtype)


def unpatchify(x: jax.Array, h: int, w: int, patch_size: int, channels: int) -> jax.Array:
  """(B, h * w, p * p * C) tokens back to an NHWC image of (h * p, w * p)."""
  b = x.shape[0]
  x = x.reshape(b, h, w, patch_size, patch_size, channels)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * patch_size, w * patch_size, channels)


def mask_to_bias(mask: jax.Array | None, dtype: Dtype) -> jax.Array | None:
  """(B, S) 0/1 key mask -> additive (B, 1, 1, S) bias, as diffusers builds it."""
  if mask is None:
    return None
  return ((1.0 - mask.astype(dtype)) * MASK_BIAS)[:, None, None, :]


# ---------------------------------------------------------------------------------------------
# Attention: one rule picks the kernel (README, "What runs where").

HALF_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
IMPLEMENTATIONS = ("auto", "xla", "cudnn")
# Overrides of the rule, read when a function is traced (set them before jitting): "platform"
# traces for another backend (lowering for a GPU from a CPU), "implementation" forces a kernel.
_OVERRIDES = {"platform": None, "implementation": None}


class KeyMask(NamedTuple):
  """Which keys every query may attend to: `valid` (B, S), 1 for a real token and 0 for padding.

  The caption mask travels to the attention as this, not as a ready-made additive bias, because
  each kernel wants it in its own form: XLA adds diffusers' (B, 1, 1, S) bias, cuDNN's fused kernel
  takes sequence lengths (it rejects a bias that does not span every query). A pytree, so
  interventions select and vmap it like any array.
  """
  valid: jax.Array


def key_mask(mask: jax.Array | None) -> KeyMask | None:
  return None if mask is None else KeyMask(mask)


@contextlib.contextmanager
def attention_overrides(platform: str | None = None, implementation: str | None = None):
  """Trace as if on `platform` ("cuda", "rocm", "tpu", "cpu") and/or force an implementation
  ("xla", "cudnn"; "auto" is the rule). Jitted functions keep what they were traced with."""
  if implementation not in (None, *IMPLEMENTATIONS):
    raise ValueError(f"attention implementation {implementation!r}: choose one of {IMPLEMENTATIONS}")
  saved = dict(_OVERRIDES)
  _OVERRIDES.update(platform=platform, implementation=implementation)
  try:
    yield
  finally:
    _OVERRIDES.update(saved)


def target_platform() -> str:
  """The platform being traced for: "cuda", "rocm", "tpu" or "cpu" (the default backend's, or the
  override's)."""
  if _OVERRIDES["platform"]:
    return _OVERRIDES["platform"]
  backend = jax.default_backend()
  if backend != "gpu":
    return backend
  # Both NVIDIA and AMD GPUs are backend "gpu"; only NVIDIA has cuDNN.
  return "rocm" if "rocm" in jax.devices()[0].client.platform_version.lower() else "cuda"


def cuda_capability() -> tuple[int, int] | None:
  """(major, minor) compute capability of the first device, None where it is not a CUDA GPU (such
  as lowering for cuda from a CPU)."""
  capability = getattr(jax.devices()[0], "compute_capability", None)
  return tuple(int(x) for x in str(capability).split(".")[:2]) if capability else None


def cudnn_unsupported(q_shape, k_shape, dtype, platform: str,
                      capability: tuple[int, int] | None = None) -> str | None:
  """Why cuDNN's fused attention cannot take these (B, T, N, H) queries and (B, S, N, H) keys, or
  None. jax's check_layout and check_is_flash_attention for our calls, plus the GPU generation:
  cuDNN's flash kernel needs Ampere (sm80) or later, and takes head_dim <= 256 from Hopper (sm90)
  on, <= 128 before; an unknown GPU is held to 128, as jax's own check holds it."""
  where = f"query {tuple(q_shape)}, key {tuple(k_shape)}, {jnp.dtype(dtype).name}"
  if platform != "cuda":
    return f"cuDNN fused attention runs on NVIDIA GPUs (platform cuda), not {platform} ({where})"
  if capability and capability < (8, 0):
    return (f"cuDNN flash attention needs an sm80 (Ampere) or newer GPU, this is "
            f"sm{capability[0]}{capability[1]} ({where})")
  if jnp.dtype(dtype) not in HALF_PRECISION:
    return f"cuDNN fused attention takes bfloat16 or float16 only ({where})"
  if len(q_shape) != 4 or len(k_shape) != 4 or q_shape[-1] != k_shape[-1]:
    return f"cuDNN fused attention needs rank-4 queries and keys of one head_dim ({where})"
  head_dim, limit = q_shape[-1], 256 if capability and capability >= (9, 0) else 128
  if head_dim % 8 or head_dim > limit:
    return (f"cuDNN fused attention needs head_dim a multiple of 8 and <= {limit} on this GPU "
            f"(256 from Hopper on), got {head_dim} ({where})")
  return None


def attention_implementation(q_shape, k_shape, dtype) -> str:
  """The rule: "cudnn" where cuDNN's fused kernel takes the call (an NVIDIA GPU from Ampere on,
  bfloat16/float16, head_dim a multiple of 8 up to 128/256), "xla" everywhere else (CPU, TPU,
  ROCm, float32).

  A half-precision GPU call that cuDNN cannot take falls back to XLA with a warning; with the
  implementation forced to "cudnn" (attention_overrides or DIT_JAX_ATTENTION=cudnn) it raises a
  ValueError saying what cuDNN supports instead.
  """
  requested = _OVERRIDES["implementation"] or os.environ.get("DIT_JAX_ATTENTION", "auto")
  if requested not in IMPLEMENTATIONS:
    raise ValueError(f"DIT_JAX_ATTENTION={requested!r}: choose one of {IMPLEMENTATIONS}")
  if requested == "xla":
    return "xla"
  platform = target_platform()
  problem = cudnn_unsupported(q_shape, k_shape, dtype, platform, cuda_capability())
  if problem and requested == "cudnn":
    raise ValueError(problem)
  if problem and platform == "cuda" and jnp.dtype(dtype) in HALF_PRECISION:
    warnings.warn(f"{problem}: attention runs on XLA instead", stacklevel=2)
  return "xla" if problem else "cudnn"


def valid_keys_first(k, v, mask: KeyMask):
  """(k, v, lengths): each row's valid keys moved to the front (in order) and how many there are.

  Softmax attention sums over keys, so reordering them changes nothing, and a kernel that reads
  only the first `lengths` keys then ignores exactly the masked ones, wherever they sit. A row with
  no valid key keeps all of them: diffusers' -10000 bias shifts every logit alike there.
  """
  valid = mask.valid.astype(bool)
  order = jnp.argsort(~valid, axis=1, stable=True)
  take = lambda t: jnp.take_along_axis(t, order[:, :, None, None], axis=1)
  count = valid.sum(axis=1, dtype=jnp.int32)
  return take(k), take(v), jnp.where(count == 0, valid.shape[1], count).astype(jnp.int32)


def _fold_into_batch(fn):
  """vmap rule for fn(q, k, v, lengths) whose batch rows are independent: broadcast unmapped
  operands, fold the mapped axis into the batch axis, call fn once. jax's own batching of the
  cuDNN call (jax 0.10) reshapes every operand as if all were mapped, and fails when some are not
  (the shared caption in a sweep vmapped over block masks)."""
  def rule(axis_size, in_batched, *args):
    def fold(a, mapped):
      if a is None:
        return None
      a = a if mapped else jnp.broadcast_to(a, (axis_size, *a.shape))
      return a.reshape(-1, *a.shape[2:])
    out = fn(*(fold(a, m) for a, m in zip(args, in_batched)))
    return out.reshape(axis_size, -1, *out.shape[1:]), True
  return rule


@functools.lru_cache(maxsize=None)
def fused_attention(implementation: str):
  """fn(q, k, v, lengths or None) -> (B, T, N, H): jax.nn.dot_product_attention reading the first
  lengths[b] keys of row b, through `implementation`, that any vmap and grad compose with."""
  def attend(q, k, v, lengths):
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                        implementation=implementation)

  batched = jax.custom_batching.custom_vmap(attend)
  batched.def_vmap(_fold_into_batch(batched))
  # custom_vmap has no reverse mode of its own: a custom_vjp around it (jax's documented pairing)
  # keeps the kernel's own backward pass, its pullback carried as the residual.
  differentiable = jax.custom_vjp(batched)

  def forward(q, k, v, lengths):
    return jax.vjp(lambda q, k, v: attend(q, k, v, lengths), q, k, v)

  differentiable.defvjp(forward, lambda pullback, g: (*pullback(g), None))
  return differentiable


def dot_product_attention(q, k, v, mask: KeyMask | None = None):
  """Softmax attention on (B, T, N, H) queries and (B, S, N, H) keys and values, keys outside
  `mask` left out, on the kernel attention_implementation picks."""
  if attention_implementation(q.shape, k.shape, q.dtype) == "cudnn":
    lengths = None
    if mask is not None:
      k, v, lengths = valid_keys_first(k, v, mask)
    return fused_attention("cudnn")(q, k, v, lengths)
  bias = None if mask is None else mask_to_bias(mask.valid, q.dtype)
  return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="xla")


def concept_scores(q, k, v, mask: KeyMask | None, concept, out_kernel, out_bias) -> jax.Array:
  """Attention contribution of the concept tokens J (docs/design.md, "The method"), fused into the
  attention.

    c = mean over queries i of || concat_h( sum_{j in J} A_ij v_j ) W_O ||   (and without W_O)

  A is normalised over all keys the softmax runs over: running the same attention with the values of
  keys outside J zeroed gives sum_{j in J} A_ij v_j exactly, through the same fused kernel, and no
  attention map is ever stored. concept: (B, S) 0/1 weights over the keys.

  out_kernel: W_O, the rows of the output projection that read these heads. out_bias: its bias
  (output_projection gives a zero one to a layer without), or None where the attention has no
  output projection of its own (FLUX single blocks: proj_out reads the MLP too). Returns (B, 3)
  float32 in variants.VARIANTS order:
    with_wo     || x W_O ||       the bias left out: it is no part of the concept's contribution
    without_wo  || x ||
    paper       || x W_O + b ||   as the paper's code applies to_out[0] (calc_attn_cont_varients.py,
                                  calc_attn_cont_using_m_mult_v_mult_o_per_block_and_t_fn;
                                  attention_processor.py, FluxAttnContCalculatorProcessor.
                                  calc_attn_cont); || x || where out_bias is None, as that code
                                  applies no W_O where the attention has no to_out
  """
  contribution = dot_product_attention(q, k, v * concept[:, :, None, None].astype(v.dtype), mask)
  flat = contribution.reshape(*contribution.shape[:2], -1)
  projected = jnp.einsum("btd,de->bte", flat, out_kernel.astype(flat.dtype),
                         preferred_element_type=jnp.float32)
  mean_norm = lambda t: jnp.mean(jnp.linalg.norm(t.astype(jnp.float32), axis=-1), axis=1)
  paper = flat if out_bias is None else projected + out_bias.astype(jnp.float32)
  values = {"with_wo": mean_norm(projected), "without_wo": mean_norm(flat), "paper": mean_norm(paper)}
  return jnp.stack([values[name] for name in VARIANTS], axis=-1)


def output_projection(layer: nn.Dense) -> tuple[jax.Array, jax.Array]:
  """(kernel, bias) of a Dense that has run; a zero bias where it has none (use_bias=False), so
  the paper's score, x W_O + b, is the one with W_O there."""
  params = layer.variables["params"]
  kernel = params["kernel"]
  return kernel, params.get("bias", jnp.zeros(kernel.shape[-1], kernel.dtype))


class DenseParams(nn.Module):
  """The kernel (in, out) and bias (or None) of a diffusers Linear, created with nn.Dense's names,
  shapes and initializers, for a projection that runs fused with others (fused_dense)."""
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (in_features, self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,)) if self.use_bias else None
    return kernel, bias


def fused_dense(x, parts, dtype: Dtype) -> list[jax.Array]:
  """x through several Linears at once: one matmul of x with their kernels concatenated along the
  output axis, split back into one output per part (docs/design.md, "Speed": fused projections).

  parts: (kernel, bias or None) pairs (DenseParams), all reading x. The parameters stay one Linear
  each, in diffusers' layout, so conversion, export and LoRA see diffusers' keys; the concatenation
  happens here, at call time. Each output equals nn.Dense's for its part (the same dot products,
  computed in `dtype`, bias added after the matmul).
  """
  kernels = [k.astype(dtype) for k, _ in parts]
  kernel = kernels[0] if len(kernels) == 1 else jnp.concatenate(kernels, axis=1)
  y = jax.lax.dot_general(x.astype(dtype), kernel, (((x.ndim - 1,), (0,)), ((), ())))
  biases = [b for _, b in parts]
  if any(b is not None for b in biases):
    y = y + jnp.concatenate([jnp.zeros(k.shape[1], dtype) if b is None else b.astype(dtype)
                             for (k, _), b in zip(parts, biases)])
  return jnp.split(y, np.cumsum([k.shape[1] for k in kernels])[:-1].tolist(), axis=-1)


def project(module_x_pairs, dtype: Dtype, use_bias: bool = True):
  """Outputs of the named Linears, those reading the same input fused into one matmul.

  module_x_pairs: (name, features, x) in order; names are the diffusers module names (to_q, ...).
  Call it from a compact method: the parameters are its module's children.
  """
  groups = {}
  for name, features, x in module_x_pairs:
    groups.setdefault(id(x), (x, []))[1].append((name, features))
  outputs = {}
  for x, named in groups.values():
    parts = [DenseParams(features, use_bias, name=name)(x.shape[-1]) for name, features in named]
    outputs.update(zip((name for name, _ in named), fused_dense(x, parts, dtype)))
  return [outputs[name] for name, _, _ in module_x_pairs]


class Attention(nn.Module):
  """Multi-head attention with diffusers' parameter names (to_q, to_k, to_v, to_out.0).

  Self-attention when `context` is None, cross-attention otherwise; `mask` (a KeyMask) leaves out
  padded keys. With `concept` ((B, S) weights over the keys) it also returns the concept's
  attention-contribution scores (see concept_scores).
  """
  heads: int
  head_dim: int
  out_dim: int | None = None
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  def project_qkv(self, x, context):
    inner = self.heads * self.head_dim
    context = x if context is None else context
    split = lambda t: t.reshape(*t.shape[:-1], self.heads, self.head_dim)
    # One matmul for Q, K and V of a self-attention, one for K and V of a cross-attention.
    q, k, v = project([("to_q", inner, x), ("to_k", inner, context), ("to_v", inner, context)],
                      self.dtype, self.use_bias)
    return split(q), split(k), split(v)

  @nn.compact
  def __call__(self, x, context=None, mask=None, concept=None):
    q, k, v = self.project_qkv(x, context)
    out = dot_product_attention(q, k, v, mask)
    out = out.reshape(*out.shape[:-2], self.heads * self.head_dim)
    to_out = dense(self.out_dim or x.shape[-1], "to_out.0", self.dtype, self.use_bias)
    out = to_out(out)
    if concept is None:
      return out
    return out, concept_scores(q, k, v, mask, concept, *output_projection(to_out))


class FeedForward(nn.Module):
  """Linear -> GELU(tanh) -> Linear, named as diffusers' FeedForward (net.0.proj, net.2)."""
  dim: int
  mult: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = dense(self.dim * self.mult, "net.0.proj", self.dtype)(x)
    return dense(self.dim, "net.2", self.dtype)(gelu_tanh(x))


class RMSNorm(nn.Module):
  """RMS norm over the last axis, statistics in float32 (diffusers' RMSNorm); `scale` is its weight."""
  eps: float = 1e-6
  use_scale: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.use_scale:
      scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
      return (x32.astype(scale.dtype) * scale).astype(self.dtype)
    return x32.astype(self.dtype)


def rope_cos_sin(ids: jax.Array, axes_dims: tuple[int, ...], theta: float = 10000.0):
  """Rotary tables for multi-axis positions: ids (T, n_axes) -> (cos, sin), each (T, sum(axes_dims)).

  Axis a rotates its own block of axes_dims[a] channels. Within a block, channel pair (2j, 2j + 1)
  turns by position * theta ** (-2j / dim); both channels of a pair share the angle (the interleaved
  layout of FLUX, diffusers' get_1d_rotary_pos_embed with repeat_interleave_real=True). Frequencies
  come from float64 NumPy as in diffusers; the angles are float32 (diffusers uses float64), which
  costs ~1e-7 * position in the angle: invisible at test sizes, ~1e-5 at 2048px.
  """
  angles = []
  for axis, dim in enumerate(axes_dims):
    freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    angles.append(ids[:, axis, None].astype(jnp.float32) * jnp.asarray(freqs, jnp.float32))
  angles = jnp.repeat(jnp.concatenate(angles, axis=-1), 2, axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos_sin) -> jax.Array:
  """Rotate (B, T, N, H) queries or keys by rope_cos_sin tables of shape (T, H), in float32."""
  cos, sin = (t[:, None, :] for t in cos_sin)
  x32 = x.astype(jnp.float32)
  pairs = x32.reshape(*x.shape[:-1], -1, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)  # (a, b) -> (-b, a)
  return (x32 * cos + rotated * sin).astype(x.dtype)


class TextProjection(nn.Module):
  """Caption MLP linear_1 -> GELU(tanh) -> linear_2 (diffusers' PixArtAlphaTextProjection).

  A module of its own so that one instance embeds two captions (a prompt and its swap) in one call;
  defining the same named Dense twice in a compact method raises flax's NameInUseError.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = dense(self.features, "linear_1", self.dtype)(x.astype(self.dtype))
    return dense(self.features, "linear_2", self.dtype)(gelu_tanh(x))


def patch_grid(latents: jax.Array, in_channels: int, patch_size: int) -> tuple[int, int]:
  """(h, w) patch grid of NHWC latents, after checking that they fit the model."""
  if latents.ndim != 4 or latents.shape[-1] != in_channels:
    raise ValueError(f"latents must be NHWC with {in_channels} channels, got {latents.shape}")
  if latents.shape[1] % patch_size or latents.shape[2] % patch_size:
    raise ValueError(f"latent height and width must be multiples of patch_size={patch_size}, got "
                     f"{latents.shape[1:3]}")
  return latents.shape[1] // patch_size, latents.shape[2] // patch_size


def adaln_modulation(module: nn.Module, emb: jax.Array, rows: int, dim: int,
                     dtype: Dtype) -> list[jax.Array]:
  """AdaLN-single (PixArt, SANA): `module`'s learned (rows, dim) `scale_shift_table` plus the
  timestep embedding, split into `rows` (B, 1, dim) arrays.

  emb is (B, rows * dim), a block's share of the 6-way projection, or (B, dim), added to every row
  as the output layer does. Call it from `module`'s compact method: the table is its parameter.
  """
  table = module.param("scale_shift_table", nn.initializers.normal(dim ** -0.5), (rows, dim))
  mod = table[None].astype(dtype) + emb.reshape(emb.shape[0], -1, dim)
  return jnp.split(mod, rows, axis=1)


def adaln_output(module: nn.Module, x: jax.Array, emb: jax.Array, features: int, dtype: Dtype):
  """Output layer of PixArt and SANA: non-affine LayerNorm modulated by the timestep embedding,
  then `proj_out` to `features` per token. Call it from the backbone's compact method."""
  shift, scale = adaln_modulation(module, emb, 2, x.shape[-1], dtype)
  x = layer_norm(dtype, 1e-6, name="norm_out")(x) * (1 + scale) + shift
  return dense(features, "proj_out", dtype)(x)
