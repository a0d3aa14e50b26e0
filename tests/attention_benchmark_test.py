"""benchmarks/attention.py (issue 42, item 4): the attention kernels at each family's head dim.

The reference here is plain NumPy, one head at a time, written apart from the benchmark's own."""
import json
import math

import numpy as np


def softmax_attention(q, k, v, scale):
  """(T, N, H) queries, (S, N, H) keys and values: each head's softmax(q k^T scale) v, in float64."""
  out = np.zeros(q.shape[:2] + (v.shape[-1],))
  for n in range(q.shape[1]):
    logits = q[:, n].astype(np.float64) @ k[:, n].astype(np.float64).T * scale
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    out[:, n] = (weights / weights.sum(axis=1, keepdims=True)) @ v[:, n]
  return out


def qkv(head_dim, q_tokens=24, kv_tokens=20, heads=2, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((1, q_tokens, heads, head_dim), dtype=np.float32),
          *(rng.standard_normal((1, kv_tokens, heads, head_dim), dtype=np.float32) for _ in range(2)))


def test_padding_head_dim_72_to_80_keeps_attention_at_72():
  """Zero-padded q, k, v at head dim 80 with the scale of 72, the output sliced, is the attention
  of the unpadded inputs (float32, within 1e-5) in JAX and in torch; with the scale of 80 it is not."""
  import jax.numpy as jnp
  import torch
  from benchmarks import attention
  q, k, v = qkv(72)
  want = softmax_attention(q[0], k[0], v[0], 1 / math.sqrt(72))
  jax_padded = attention.padded(attention.jax_softmax("xla"), 80)
  got = np.asarray(jax_padded(*(jnp.asarray(a) for a in (q, k, v))))[0]
  assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
  torch_padded = attention.padded(attention.torch_softmax("math"), 80)
  got = torch_padded(*(torch.from_numpy(a).transpose(1, 2) for a in (q, k, v))).transpose(1, 2).numpy()[0]
  assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
  # The check can tell: padding with the padded width's own scale changes the result.
  wrong = attention.jax_softmax("xla")(*(attention.pad_last(jnp.asarray(a), 80) for a in (q, k, v)))
  assert np.abs(np.asarray(wrong)[0, ..., :72] - want).max() > 1e-3


def test_linear_attention_in_jax_and_torch_is_the_relu_kernel_attention():
  import jax.numpy as jnp
  import torch
  from benchmarks import attention
  q, k, v = qkv(32, kv_tokens=24)
  rq, rk = np.maximum(q[0], 0).astype(np.float64), np.maximum(k[0], 0).astype(np.float64)
  want = np.stack([(rq[:, n] @ rk[:, n].T) @ v[0, :, n] / (rq[:, n] @ rk[:, n].T).sum(1, keepdims=True)
                   for n in range(q.shape[2])], axis=1)
  got = np.asarray(attention.relu_linear_attention(*(jnp.asarray(a) for a in (q, k, v))))[0]
  assert np.abs(got - want).max() < 1e-5
  got = attention.torch_linear_attention(*(torch.from_numpy(a).transpose(1, 2) for a in (q, k, v)))
  assert np.abs(got.transpose(1, 2).numpy()[0] - want).max() < 1e-5


def test_attention_benchmark_tiny_times_every_case_and_says_why_a_kernel_did_not_run(tmp_path):
  """At the tiny preset on a CPU: every case of the 1024px list, each implementation timed and
  checked against NumPy or its error recorded; cuDNN skipped with its reason; padding rows at head
  dim 72 only, with their ratio to the unpadded call."""
  import jax
  from benchmarks import attention
  out = tmp_path / "attention.json"
  attention.main(["--preset", "tiny", "--iters", "1", "--dtype", "float32", "--out", str(out)])
  result = json.loads(out.read_text())
  assert {"preset", "dtype", "device", "cases", "rows", "environment"} <= set(result)
  assert list(result["cases"]) == [c.name for c in attention.FULL]
  assert [c["head_dim"] for c in result["cases"].values()] == [72, 72, 32, 112, 128]
  for row in result["rows"]:
    assert {"case", "implementation", "padding"} <= set(row)
    if "error" in row:
      continue
    assert {"median_ms", "min_ms", "iters", "tflops", "rel_error"} <= set(row)
    assert row["rel_error"] < 1e-5, row                   # float32 against NumPy
  ran = {(r["case"], r["implementation"], r["padding"]) for r in result["rows"] if "median_ms" in r}
  for case in ("pixart_self", "pixart_cross", "sana_cross", "flux_joint"):
    assert {(case, "jax-xla", "none"), (case, "torch-math", "none")} <= ran
  assert {("sana_linear_self", "jax-xla", "none"), ("sana_linear_self", "torch", "none")} <= ran
  padded = [r for r in result["rows"] if r["padding"] != "none"]
  assert {r["case"] for r in padded} == {"pixart_self", "pixart_cross"}
  assert all("speedup_vs_unpadded" in r for r in padded if "median_ms" in r)
  if jax.default_backend() == "cpu":
    cudnn = [r for r in result["rows"] if r["implementation"] == "jax-cudnn"]
    assert cudnn and all(r["error"].startswith("skipped: cuDNN fused attention runs on NVIDIA GPUs")
                         for r in cudnn)
  from benchmarks import run_all
  assert run_all.attention_summary(result).startswith("fastest: pixart_self ")
