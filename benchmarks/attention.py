"""Attention alone, at each family's head dim: jax.nn.dot_product_attention (cuDNN, XLA) vs torch SDPA.

    python benchmarks/attention.py                  # 1024px shapes, bf16, GPU
    python benchmarks/attention.py --preset tiny    # seconds on a CPU: checks the harness

Cases at 1024px (issue 42, item 4): PixArt's self-attention (16 heads of 72, 4096 image tokens)
and cross-attention (4096 queries, 300 caption tokens), batch 2 (CFG); SANA's cross-attention (20
heads of 112, 1024 queries, 300 caption tokens) and its ReLU linear self-attention (70 heads of 32,
1024 tokens), batch 2; FLUX's joint attention (24 heads of 128, 4096 image + 512 text tokens),
batch 1. No masks: the real models mask padded caption tokens, which changes which kernels apply.

Softmax attention runs through jax.nn.dot_product_attention with implementation="cudnn" and "xla",
and torch's scaled_dot_product_attention pinned to each backend (flash, efficient, cudnn, math);
a combination that does not run records its error. At head dim 72 each also runs padded to 80:
"pad80" pads q, k, v with zeros inside the timed call and slices the output (the scale stays
1/sqrt(72): zero columns add nothing to q.k, zero value columns only add zero outputs);
"pad80_kernel" times the kernel on inputs already padded, as zero-padded projection weights would
give them. Linear attention runs dit_jax's relu_linear_attention and the same sums in torch, both
in float32 as diffusers computes them.

Every row's output is checked against a float64 NumPy reference on its first batch row and first
two heads (rel_error). TFLOP/s count the unpadded work: 4·B·N·Tq·Tk·H for softmax attention,
2·B·N·T·H·(2H+1) for linear attention. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from dit_jax.models import layers
from dit_jax.models.sana import relu_linear_attention

PADDED_HEAD_DIM = {72: 80}   # head dim -> the multiple of 16 it is padded to
TORCH_BACKENDS = ("flash", "efficient", "cudnn", "math")


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  kind: str          # "softmax" or "linear"
  batch: int
  heads: int
  head_dim: int
  q_tokens: int
  kv_tokens: int

  def flops(self) -> float:
    b, n, h = self.batch, self.heads, self.head_dim
    if self.kind == "linear":
      return 2.0 * b * n * self.q_tokens * h * (2 * h + 1)
    return 4.0 * b * n * self.q_tokens * self.kv_tokens * h


FULL = (Case("pixart_self", "softmax", 2, 16, 72, 4096, 4096),
        Case("pixart_cross", "softmax", 2, 16, 72, 4096, 300),
        Case("sana_linear_self", "linear", 2, 70, 32, 1024, 1024),
        Case("sana_cross", "softmax", 2, 20, 112, 1024, 300),
        Case("flux_joint", "softmax", 1, 24, 128, 4096 + 512, 4096 + 512))


def cases(preset: str) -> tuple[Case, ...]:
  """The 1024px cases, or at "tiny" the same head dims with 2 heads and tens of tokens."""
  if preset == "full":
    return FULL
  if preset != "tiny":
    raise ValueError(f"preset {preset!r}: choose full or tiny")
  return tuple(dataclasses.replace(c, batch=1, heads=2, q_tokens=64,
                                   kv_tokens=64 if c.kv_tokens == c.q_tokens else 16) for c in FULL)


# ---------------------------------------------------------------------------------------------
# References, in NumPy: independent of both frameworks.

def numpy_attention(q, k, v, scale: float | None = None) -> np.ndarray:
  """softmax(q k^T * scale) v in float64; q (B, T, N, H), k and v (B, S, N, H) -> (B, T, N, H)."""
  q, k, v = (np.asarray(a, np.float64).transpose(0, 2, 1, 3) for a in (q, k, v))   # (B, N, T, H)
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  logits = q @ k.transpose(0, 1, 3, 2) * scale
  weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
  weights /= weights.sum(axis=-1, keepdims=True)
  return (weights @ v).transpose(0, 2, 1, 3)


def numpy_linear_attention(q, k, v, eps: float = 1e-15) -> np.ndarray:
  """sum_s relu(q_t).relu(k_s) v_s / (sum_s relu(q_t).relu(k_s) + eps) in float64; (B, T, N, H)."""
  q, k, v = (np.asarray(a, np.float64).transpose(0, 2, 1, 3) for a in (q, k, v))   # (B, N, T, H)
  scores = np.maximum(q, 0) @ np.maximum(k, 0).transpose(0, 1, 3, 2)
  return (scores @ v / (scores.sum(axis=-1, keepdims=True) + eps)).transpose(0, 2, 1, 3)


# ---------------------------------------------------------------------------------------------
# The implementations: each fn(q, k, v) on its framework's arrays, all in (B, T, N, H) layout
# outside; torch's SDPA takes (B, N, T, H), which the inputs are given in (see `inputs`).

def pad_last(x, width: int):
  """x with zeros appended to its last axis up to `width` (a JAX array or a torch tensor)."""
  extra = width - x.shape[-1]
  if isinstance(x, torch.Tensor):
    return torch.nn.functional.pad(x, (0, extra))
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, extra)])


def padded(attend, width: int):
  """attend(q, k, v, scale) run at head dim `width`: q, k, v zero-padded, the output sliced back;
  the scale stays that of the real head dim."""
  def run(q, k, v):
    head_dim = q.shape[-1]
    out = attend(pad_last(q, width), pad_last(k, width), pad_last(v, width), 1.0 / math.sqrt(head_dim))
    return out[..., :head_dim]
  return run


def jax_softmax(implementation: str):
  return lambda q, k, v, scale=None: jax.nn.dot_product_attention(q, k, v, scale=scale,
                                                                   implementation=implementation)


def torch_softmax(backend: str):
  from torch.nn.attention import SDPBackend, sdpa_kernel
  pinned = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[backend]

  def attend(q, k, v, scale=None):   # (B, N, T, H)
    with sdpa_kernel(pinned):
      return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)
  return attend


def torch_linear_attention(q, k, v, eps: float = 1e-15):
  """SANA's ReLU linear attention in torch, float32 as diffusers runs it; (B, N, T, H)."""
  q, k, v = torch.relu(q).float(), torch.relu(k).float(), v.float()
  kv = torch.einsum("bnsd,bnse->bnde", k, v)
  numerator = torch.einsum("bntd,bnde->bnte", q, kv)
  denominator = torch.einsum("bntd,bnd->bnt", q, k.sum(dim=2))
  return numerator / (denominator[..., None] + eps)


# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Inputs:
  numpy: tuple          # q, k, v in (B, T, N, H), float32, rounded to the benchmark's dtype
  jax: tuple            # the same on JAX's device, (B, T, N, H)
  torch: tuple          # the same on torch's device, (B, N, T, H)


def inputs(case: Case, dtype: str, device: str) -> Inputs:
  rng = np.random.default_rng(0)
  shapes = [(case.batch, case.q_tokens, case.heads, case.head_dim)] + \
      [(case.batch, case.kv_tokens, case.heads, case.head_dim)] * 2
  host = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
  on_jax = tuple(jnp.asarray(a, dtype) for a in host)
  rounded = tuple(np.array(a, np.float32) for a in on_jax)   # a writable copy, for torch.from_numpy
  on_torch = tuple(torch.from_numpy(a).to(device=device, dtype=getattr(torch, dtype)).transpose(1, 2)
                   .contiguous() for a in rounded)
  return Inputs(rounded, on_jax, on_torch)


def reference(case: Case, data: Inputs) -> np.ndarray:
  """The float64 NumPy output on the first batch row and first two heads."""
  q, k, v = (a[:1, :, :2] for a in data.numpy)
  return numpy_linear_attention(q, k, v) if case.kind == "linear" else numpy_attention(q, k, v)


def variants(case: Case, dtype: str):
  """(implementation, padding, framework, fn, or a string: why it is skipped) for one case."""
  if case.kind == "linear":
    yield "jax-xla", "none", "jax", jax.jit(relu_linear_attention)
    yield "torch", "none", "torch", torch_linear_attention
    return
  # cuDNN is tried on any NVIDIA GPU (an unsupported shape records jax's own error); elsewhere it
  # cannot run at all, and the row says why instead.
  platform = layers.target_platform()
  cudnn = jax_softmax("cudnn")
  if platform != "cuda":
    cudnn = layers.cudnn_unsupported((case.batch, case.q_tokens, case.heads, case.head_dim),
                                     (case.batch, case.kv_tokens, case.heads, case.head_dim), dtype, platform)
  impls = [("jax-cudnn", "jax", cudnn), ("jax-xla", "jax", jax_softmax("xla"))]
  impls += [(f"torch-{b}", "torch", torch_softmax(b)) for b in TORCH_BACKENDS]
  width = PADDED_HEAD_DIM.get(case.head_dim)
  for name, framework, attend in impls:
    if isinstance(attend, str):
      yield name, "none", framework, attend
      continue
    wrap = jax.jit if framework == "jax" else (lambda f: f)
    yield name, "none", framework, wrap(attend)
    if width:
      yield name, f"pad{width}", framework, wrap(padded(attend, width))
      scale = 1.0 / math.sqrt(case.head_dim)
      yield name, f"pad{width}_kernel", framework, wrap(lambda q, k, v, a=attend, s=scale: a(q, k, v, s))


def time_variant(case: Case, data: Inputs, framework: str, padding: str, fn, want: np.ndarray,
                 iters: int, cuda: bool) -> dict:
  """One row: times and the error against the NumPy reference, or the error that stopped it."""
  args = data.jax if framework == "jax" else data.torch
  if padding.endswith("_kernel"):
    args = tuple(pad_last(a, PADDED_HEAD_DIM[case.head_dim]) for a in args)
  if framework == "jax":
    sync = jax.block_until_ready
  else:
    sync = (lambda out: torch.cuda.synchronize()) if cuda else (lambda out: out)
  try:
    out = fn(*args)
    sync(out)
  except Exception as error:   # an unsupported shape, dtype or device: recorded, not fatal
    return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"}
  if framework == "torch":
    out = out.transpose(1, 2)
    out = out.float().cpu().numpy()
  out = np.asarray(out, np.float32)[:1, :, :2, :case.head_dim]
  row = timing.time_call(lambda: fn(*args), sync, warmup=2, iters=iters)
  row["tflops"] = case.flops() / (row["median_ms"] / 1e3) / 1e12
  row["rel_error"] = float(np.linalg.norm(out - want) / np.linalg.norm(want))
  return row


def run(preset: str, dtype: str, iters: int) -> dict:
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  rows = []
  for case in cases(preset):
    data = inputs(case, dtype, device)
    want = reference(case, data)
    for name, padding, framework, fn in variants(case, dtype):
      row = {"case": case.name, "implementation": name, "padding": padding}
      if isinstance(fn, str):
        rows.append({**row, "error": f"skipped: {fn}"})
        continue
      rows.append({**row, **time_variant(case, data, framework, padding, fn, want, iters, cuda)})
    del data
  for row in rows:   # padding's effect: the unpadded median over the padded one (> 1: it pays)
    if row["padding"] != "none" and "median_ms" in row:
      plain = next(r for r in rows if r["case"] == row["case"] and r["implementation"] ==
                   row["implementation"] and r["padding"] == "none")
      if "median_ms" in plain:
        row["speedup_vs_unpadded"] = plain["median_ms"] / row["median_ms"]
  return {"preset": preset, "dtype": dtype, "device": timing.device_name(), "jax": jax.__version__,
          "torch": torch.__version__, "jax_backend": jax.default_backend(),
          "cases": {c.name: dataclasses.asdict(c) for c in cases(preset)}, "rows": rows}


def fastest(result: dict) -> dict[str, dict]:
  """Each case's fastest row that ran."""
  best = {}
  for row in result["rows"]:
    if "median_ms" in row and (row["case"] not in best or row["median_ms"] < best[row["case"]]["median_ms"]):
      best[row["case"]] = row
  return best


def print_rows(result: dict) -> None:
  shown = []
  for row in result["rows"]:
    cells = {"case": row["case"], "implementation": row["implementation"], "padding": row["padding"]}
    if "error" in row:
      cells["note"] = row["error"][:100]
    else:
      cells.update({"median ms": f"{row['median_ms']:.3f}", "min ms": f"{row['min_ms']:.3f}",
                    "TFLOP/s": timing.figure(row["tflops"]), "rel err": f"{row['rel_error']:.1e}",
                    "vs unpadded": f"{row['speedup_vs_unpadded']:.2f}x" if "speedup_vs_unpadded" in row else ""})
    shown.append(cells)
  timing.print_table(shown, ["case", "implementation", "padding", "median ms", "min ms", "TFLOP/s",
                             "rel err", "vs unpadded", "note"])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--out", default=None, help="JSON path (default results/...)")
  args = parser.parse_args(argv)
  if args.iters < 1:
    parser.error("--iters must be at least 1")
  result = run(args.preset, args.dtype, args.iters)
  print(f"\nattention ({args.preset}), {args.dtype} on {result['device']}")
  print_rows(result)
  timing.write_result(args.out or timing.result_path(f"attention_{args.preset}", torch.cuda.is_available()),
                      result)
  return result


if __name__ == "__main__":
  main()
