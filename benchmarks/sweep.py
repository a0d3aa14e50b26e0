"""The single-block sweep of localization in one call vs plain sampling once per block in diffusers.

    python benchmarks/sweep.py                  # PixArt-XL-2 512px: 28 interventions, 20 steps, CFG, bf16, GPU
    python benchmarks/sweep.py --preset tiny    # CPU check of the harness

Ours: `sweep_lib.intervention_sweep` over the 28 one-block masks (the neutral prompt in block b
only), vmapped and jitted: one call makes 28 images. Diffusers: its pipeline run 28 times, each a
plain sampling of one image (what a user without batched interventions would do; a hooked
intervention costs at least as much). Same random weights, prompt embeddings, noise and scheduler.

Check of what is timed: the same compiled sweep run with the neutral prompt equal to the concept
prompt must give diffusers' plain latents in every row (reported as a relative error).
Writes JSON and prints images/s for both and the ratio (issue #7 target: >= 1.5x).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from benchmarks.generate import make_sampling, nhwc_numpy
from dit_jax.localize import sweep as sweep_lib


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=("512", "tiny"), default="512")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--guidance", type=float, default=4.5)
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--iters", type=int, default=2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  run = make_sampling("pixart", args.preset, 1, args.steps, args.guidance, args.dtype)
  blocks = run.module.config.num_blocks
  masks = jnp.eye(blocks, dtype=bool)
  reverse = jnp.zeros((blocks,), bool)

  def diffusers_sweep():     # one plain sampling per block
    return [run.run_diffusers() for _ in range(blocks)]

  reference = nhwc_numpy(run.run_diffusers())
  result = {"diffusers": timing.time_call(diffusers_sweep, run.sync, warmup=1, iters=args.iters)}
  if torch.cuda.is_available():
    torch.cuda.empty_cache()

  concept = run.cond
  neutral = {**concept, "caption": jnp.asarray(
      np.random.default_rng(7).standard_normal(concept["caption"].shape), concept["caption"].dtype)}
  began = time.perf_counter()
  sweep = jax.jit(sweep_lib.intervention_sweep("pixart", run.loop)).lower(
      run.params, run.noise, concept, neutral, masks, reverse).compile()
  compile_seconds = time.perf_counter() - began
  call = lambda: sweep(run.params, run.noise, concept, neutral, masks, reverse)
  result["flax"] = timing.time_call(call, jax.block_until_ready, warmup=1, iters=args.iters)
  same = np.asarray(sweep(run.params, run.noise, concept, concept, masks, reverse), np.float32)
  err = max(float(np.linalg.norm(row - reference) / np.linalg.norm(reference)) for row in same)

  rows = timing.speed_rows(result, blocks, "sweep")
  result.update(preset=args.preset, interventions=blocks, steps=args.steps, dtype=args.dtype,
                device=timing.device_name(), flax_compile_seconds=compile_seconds,
                speedup=result["diffusers"]["median_ms"] / result["flax"]["median_ms"], target=1.5,
                no_op_sweep_rel_error_vs_diffusers=err)
  print(f"\nsingle-block sweep, PixArt ({args.preset}): {blocks} interventions x {args.steps} steps, "
        f"CFG, {args.dtype} on {result['device']}; no-op sweep vs diffusers rel. error {err:.2e}")
  timing.print_table(rows, list(rows[0]))
  timing.write_result(args.out or timing.result_path(f"sweep_pixart_{args.preset}", torch.cuda.is_available()),
                      result)


if __name__ == "__main__":
  main()
