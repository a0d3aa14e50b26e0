"""The diffusers side of forward.py and generate.py (issue 42, item 5): the baselines Flax is held to.

One model, timed in this order, each entry of the result saying how it ran:

  eager                 unfused, as a user gets it from from_pretrained (the runs stored so far)
  compile "default"     torch.compile in its default mode, unfused: the number earlier runs stored
                        as diffusers_compile
  eager, fused QKV      after transformer.fuse_qkv_projections(), where diffusers fuses anything
  compile max-autotune  torch.compile(mode="max-autotune") of the fused model: autotuned matmuls,
                        CUDA graphs; the strongest diffusers baseline, and slow to build (minutes
                        per model on an H100), so its build time is stored as compile_seconds

Fusing mutates the model, so the unfused variants come first. torch's SDPA backend is either pinned
(--sdpa-backend) or torch's own choice; either way the backends eager called are recorded from a
profiled call (a compiled call replaying a CUDA graph shows no operators to the profiler).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import numpy as np
import torch

from benchmarks import timing

COMPILE_MODES = ("default", "max-autotune")
# Where each compile mode's timing goes in the result (diffusers_compile predates max-autotune).
COMPILED_ENTRY = {"default": "diffusers_compile", "max-autotune": "diffusers_compile_max_autotune"}
FUSED_EAGER_ENTRY = "diffusers_eager_fused_qkv"
SDPA_BACKENDS = ("auto", "flash", "efficient", "cudnn", "math")
# The aten operator each SDPA backend dispatches to, as the profiler names it.
SDPA_OPERATORS = {"aten::_scaled_dot_product_flash_attention": "flash",
                  "aten::_scaled_dot_product_flash_attention_for_cpu": "flash",
                  "aten::_scaled_dot_product_efficient_attention": "efficient",
                  "aten::_scaled_dot_product_cudnn_attention": "cudnn",
                  "aten::_scaled_dot_product_attention_math": "math",
                  "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable"}


def add_arguments(parser: argparse.ArgumentParser, modes: tuple[str, ...] = COMPILE_MODES) -> None:
  """--compile, --compile-modes (by default `modes`) and --sdpa-backend, as forward.py and
  generate.py take them."""
  parser.add_argument("--compile", choices=("auto", "yes", "no"), default="auto",
                      help="time torch.compile baselines (auto: on a GPU only; they are slow to build on a CPU)")
  parser.add_argument("--compile-modes", default=",".join(modes),
                      help=f"comma list of torch.compile modes to time, of {', '.join(COMPILE_MODES)} "
                           "(max-autotune runs on the fused-QKV model)")
  parser.add_argument("--sdpa-backend", choices=SDPA_BACKENDS, default="auto",
                      help="pin torch's scaled_dot_product_attention backend (auto: torch chooses)")


def compile_modes(compile_flag: str, modes: str, cuda: bool) -> tuple[str, ...]:
  """The torch.compile modes to time: none where --compile says no (or auto without a GPU)."""
  chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
  unknown = [m for m in chosen if m not in COMPILE_MODES]
  if unknown:
    raise SystemExit(f"--compile-modes: unknown {unknown}; choose from {', '.join(COMPILE_MODES)}")
  if compile_flag == "no" or (compile_flag == "auto" and not cuda):
    return ()
  return tuple(m for m in COMPILE_MODES if m in chosen)   # default first: it runs on the unfused model


def sdpa_context(backend: str):
  """A context that pins torch's SDPA to `backend`; nothing for "auto"."""
  if backend == "auto":
    return contextlib.nullcontext()
  from torch.nn.attention import SDPBackend, sdpa_kernel
  names = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
           "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}
  if backend not in names:
    raise ValueError(f"SDPA backend {backend!r}: choose one of {SDPA_BACKENDS}")
  return sdpa_kernel(names[backend])


def sdpa_backends_used(call: Callable[[], object]) -> dict[str, int]:
  """How many SDPA calls went to each backend in one call of `call`, from torch's profiler."""
  from torch.profiler import ProfilerActivity, profile
  with profile(activities=[ProfilerActivity.CPU]) as prof:
    call()
  counts = {}
  for event in prof.key_averages():
    if event.key in SDPA_OPERATORS:
      backend = SDPA_OPERATORS[event.key]
      counts[backend] = counts.get(backend, 0) + event.count
  return counts


# Linear layers diffusers' fusion adds beside to_q/to_k/to_v (the originals stay in the model).
FUSED_LAYERS = ("to_qkv", "to_kv", "to_added_qkv")


def fused_modules(model: torch.nn.Module) -> int:
  return sum(1 for m in model.modules()
             if getattr(m, "fused_projections", False) or any(hasattr(m, n) for n in FUSED_LAYERS))


def fuse_qkv(model: torch.nn.Module) -> dict:
  """model.fuse_qkv_projections() where diffusers has it; whether it fused anything, and if not why.
  SANA has the method but fuses nothing: its linear-attention processors read to_q/to_k/to_v."""
  name = type(model).__name__
  if not hasattr(model, "fuse_qkv_projections"):
    return {"applied": False, "reason": f"{name} has no fuse_qkv_projections()"}
  try:
    model.fuse_qkv_projections()
  except (ValueError, NotImplementedError) as error:
    return {"applied": False, "reason": f"{name}.fuse_qkv_projections() refused: {error}"}
  count = fused_modules(model)
  if not count:
    return {"applied": False, "reason": f"{name}.fuse_qkv_projections() fused no attention module"}
  return {"applied": True, "fused_modules": count}


def rel_error(out: np.ndarray, reference: np.ndarray) -> float:
  return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


def as_numpy(t: torch.Tensor) -> np.ndarray:
  return t.detach().float().cpu().numpy()


def time_compiled(model, mode: str, call_with, sync, warmup: int, iters: int, reference) -> dict:
  """torch.compile(model, mode) timed through call_with; its first call (the build) timed apart."""
  from torch._dynamo.utils import counters
  torch._dynamo.reset()   # a fresh start: no guards or CUDA graphs left from an earlier mode
  graphs, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
  compiled = torch.compile(model, mode=None if mode == "default" else mode)
  call = call_with(compiled)
  began = time.perf_counter()
  out = call()
  sync(out)
  built = time.perf_counter() - began
  error = rel_error(as_numpy(out), reference)   # copied now: a CUDA graph's output is overwritten
  # dynamo's counters run on across resets: this build's graphs and breaks are the difference.
  graphs = counters["stats"]["unique_graphs"] - graphs
  breaks = sum(counters["graph_break"].values()) - breaks
  entry = timing.time_call(call, sync, warmup=warmup, iters=iters)
  return {**entry, "mode": mode, "compile_seconds": built, "dynamo_graphs": graphs, "graph_breaks": breaks,
          "rel_error_vs_eager": error}


def time_baselines(model: torch.nn.Module, call_with: Callable[[torch.nn.Module], Callable[[], torch.Tensor]],
                   sync, *, modes: tuple[str, ...], sdpa: str = "auto", eager_entry: str = "diffusers_eager",
                   fused_eager: bool = True, warmup: int = 3, iters: int = 10) -> dict:
  """The diffusers entries of a result, in the order of the module docstring.

  call_with(module) -> a no-argument call that runs `module` (the model, or a compiled wrapper of
  it) and returns its output; calls of one variant run one after another, so a call_with that
  installs the module somewhere (a pipeline's transformer) is safe. Returns the timed entries (each
  with fused_qkv), "fused_qkv" (applied or why not; absent where nothing asked for fusion) and
  "sdpa_backend" (pinned, and the backends eager's SDPA calls went to).
  """
  result = {}
  with torch.inference_mode(), sdpa_context(sdpa):
    eager = call_with(model)
    reference = as_numpy(eager())
    result["sdpa_backend"] = {"pinned": None if sdpa == "auto" else sdpa,
                              "eager_calls": sdpa_backends_used(eager)}
    result[eager_entry] = {**timing.time_call(eager, sync, warmup=warmup, iters=iters), "fused_qkv": False}
    if "default" in modes:
      result[COMPILED_ENTRY["default"]] = {
          **time_compiled(model, "default", call_with, sync, warmup, iters, reference), "fused_qkv": False}
    if fused_eager or "max-autotune" in modes:
      fusion = result["fused_qkv"] = fuse_qkv(model)
      fused = fusion["applied"]
      if fused_eager and fused:
        call = call_with(model)
        error = rel_error(as_numpy(call()), reference)
        result[FUSED_EAGER_ENTRY] = {**timing.time_call(call, sync, warmup=warmup, iters=iters),
                                     "fused_qkv": True, "rel_error_vs_eager": error}
      if "max-autotune" in modes:
        result[COMPILED_ENTRY["max-autotune"]] = {
            **time_compiled(model, "max-autotune", call_with, sync, warmup, iters, reference),
            "fused_qkv": fused}
    torch._dynamo.reset()   # frees the compiled graphs and CUDA-graph memory before JAX runs
  return result


def notes(entry: dict) -> str:
  """How a timed diffusers entry ran, for the printed tables: fused QKV, compile mode and build time."""
  parts = ["fused QKV"] if entry.get("fused_qkv") else []
  if "mode" in entry:
    parts.append(f"compile {entry['mode']}: built in {entry['compile_seconds']:.0f} s, "
                 f"{entry['dynamo_graphs']} graph(s), {entry['graph_breaks']} break(s)")
  return ", ".join(parts)


def describe(result: dict) -> str:
  """One line on how the diffusers baselines ran: fusion, SDPA backend."""
  fusion = result.get("fused_qkv")
  fused = ("not asked for" if fusion is None else f"{fusion['fused_modules']} attention modules fused"
           if fusion["applied"] else fusion["reason"])
  sdpa = result["sdpa_backend"]
  calls = ", ".join(f"{n} x {b}" for b, n in sdpa["eager_calls"].items()) or "none seen"
  return (f"diffusers: fused QKV: {fused}; SDPA backend "
          f"{'pinned to ' + sdpa['pinned'] if sdpa['pinned'] else 'torch chooses'}, eager calls: {calls}")


def kept_state(model: torch.nn.Module, keys: set[str]) -> dict:
  """The model's state dict without the layers fusion added (exact copies of to_q/to_k/to_v):
  the Flax conversion reads diffusers' published keys."""
  return {k: v for k, v in model.state_dict().items() if k in keys}
