"""Localized vs full fine-tuning at real model sizes: step time and memory (issue #8).

    python benchmarks/finetune_step.py --model pixart    # PixArt-XL-2 512px, bf16: 5 of 28 blocks vs all 28
    python benchmarks/finetune_step.py --model flux      # FLUX.1-dev, bf16: 6 blocks (all 57 cannot fit 80 GB)
    python benchmarks/finetune_step.py --model pixart --preset tiny   # CPU check of the harness

Random weights, random latents and text states, and the project's own training step
(loop.make_train_step): gradients are taken only w.r.t. the selected blocks and AdamW keeps state
only for them. Each variant runs in its own process, so its peak device memory is its own. Reported
per variant: trainable parameters; gradient + optimizer-state bytes (what localization saves); XLA's
memory plan of the step (loop.TrainStep.memory); the measured peak device memory (GPU); the
median step time. The objective is the DDPM epsilon loss for both families: FLUX itself is trained
with flow matching, but the cost is the network's, which is the same.

Default localized sets spread over the depth, as localization picks them; FLUX's are double-stream
blocks, the largest, starting at block 0, so the backward pass runs through every block: the worst
case for memory.
"""
from __future__ import annotations

import argparse
import functools
import os
import multiprocessing
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from dit_jax import families
from dit_jax.train import loop
from dit_jax.families.flux import latent_image_ids
from dit_jax.pipeline import loading
from dit_jax import blocks as blocks_lib

# model -> preset -> diffusers config, latent grid (tokens per side after patching x patch), text length
CONFIGS = {
    "pixart": {
        "full": (dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, cross_attention_dim=1152,
                      caption_channels=4096, sample_size=64, in_channels=4, out_channels=8,
                      use_additional_conditions=False), 64, 120),     # PixArt-XL-2-512x512
        "tiny": (dict(num_layers=4, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                      caption_channels=16, sample_size=16, in_channels=4, out_channels=8,
                      use_additional_conditions=False), 16, 8)},
    "flux": {
        "full": (dict(guidance_embeds=True), 32, 512),   # FLUX.1-dev; 32x32 packed tokens = 512px
        "tiny": (dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                      joint_attention_dim=32, pooled_projection_dim=16, in_channels=16,
                      axes_dims_rope=(4, 6, 6), guidance_embeds=True), 8, 8)},
}
LOCALIZED = {("pixart", "full"): "3,8,13,18,23", ("pixart", "tiny"): "1,3",
             ("flux", "full"): "0,3,6,9,12,15", ("flux", "tiny"): "0,3"}
VARIANTS = {"pixart": ("localized", "full"), "flux": ("localized",)}
# FLUX.1 DreamBooth runs at batch 1: its activations for a backward pass through all 57 blocks
# are tens of GB at 512px already.
BATCH = {"pixart": 8, "flux": 1}


def random_params(shapes, dtype, seed: int = 0):
  """N(0, 0.02) weights of the given shapes, drawn on the device in `dtype` (FLUX.1-dev's 12B
  parameters would not fit twice in host memory as float32)."""
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  # Leaf by leaf: one small compilation per distinct shape, instead of one huge program.
  return jax.tree_util.tree_unflatten(
      treedef, [_normal(k, tuple(leaf.shape), jnp.dtype(dtype)) for k, leaf in zip(keys, leaves)])


@functools.partial(jax.jit, static_argnums=(1, 2))
def _normal(key, shape, dtype):
  return (0.02 * jax.random.normal(key, shape)).astype(dtype)


def pixart_inputs(module, config, rng, batch, grid, text_len):
  """A cross-attention batch and apply(params, noisy, t, batch) -> prediction."""
  data = {"caption": rng.standard_normal((batch, text_len, config.caption_channels)).astype(np.float32),
          "caption_mask": np.ones((batch, text_len), np.float32)}
  apply = lambda p, x, t, b: module.apply({"params": p}, x, t, b["caption"], b["caption_mask"])
  return data, apply


def flux_inputs(module, config, rng, batch, grid, text_len):
  """A joint-attention batch; FLUX reads packed tokens (B, grid^2, C) and timesteps in [0, 1]."""
  data = {"caption": rng.standard_normal((batch, text_len, config.joint_attention_dim)).astype(np.float32),
          "pooled": rng.standard_normal((batch, config.pooled_projection_dim)).astype(np.float32)}
  img_ids, txt_ids = latent_image_ids(grid, grid), np.zeros((text_len, 3), np.float32)

  def apply(p, x, t, b):
    out = module.apply({"params": p}, x.reshape(x.shape[0], -1, x.shape[-1]), b["caption"], b["pooled"],
                       t / 1000.0, img_ids, txt_ids, jnp.full((x.shape[0],), 3.5))
    return out.reshape(x.shape)
  return data, apply


INPUTS = {"pixart": pixart_inputs, "flux": flux_inputs}


def make_case(model: str, preset: str, batch: int, dtype):
  """(module, params, batch dict, apply(params, noisy, t, batch) -> prediction)."""
  config_dict, grid, text_len = CONFIGS[model][preset]
  fam = families.get(model)
  config = fam.config_cls.from_diffusers(config_dict)
  module = fam.module_cls(config=config, dtype=dtype)
  params = random_params(loading.param_shapes(fam, config), dtype)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, grid, grid, config.in_channels)).astype(np.float32)
  data, apply = INPUTS[model](module, config, rng, batch, grid, text_len)
  return module, params, jax.tree_util.tree_map(jnp.asarray, {"images": images, **data}), apply


def run_variant(model: str, preset: str, variant: str, blocks: str, batch: int, dtype: str,
                steps: int) -> dict:
  module, params, data, apply = make_case(model, preset, batch, jnp.dtype(dtype))
  chosen = None if variant == "full" else [int(b) for b in blocks.split(",")]
  trainable, frozen = loop.split_params(params, blocks_lib.parameter_selector(chosen, module.config))
  del params
  optimizer = loop.make_optimizer(1e-5, 1, 1000)
  state = loop.init_state(trainable, optimizer, seed=0, ema=False)
  alphas = jnp.cumprod(1.0 - jnp.linspace(1e-4, 0.02, 1000))      # DDPM's linear betas
  loss_fn = lambda p, b, key, aux: loop.diffusion_loss(apply, p, b, key, alphas)
  step = loop.make_train_step(loss_fn, optimizer, frozen)
  began = time.perf_counter()
  plan = step.memory(state, data)
  nbytes = lambda tree: int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))
  grad_and_optimizer = nbytes(state.trainable) + nbytes(state.opt_state)
  state, loss = step(state, data)      # compiles
  jax.block_until_ready(loss)
  compile_seconds = time.perf_counter() - began
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, loss = step(state, data)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  return {"variant": variant, "blocks": blocks if chosen else "all",
          "trainable_parameters": int(sum(x.size for x in jax.tree_util.tree_leaves(state.trainable))),
          "grad_and_optimizer_bytes": grad_and_optimizer, "xla_plan_bytes": plan,
          "measured_peak_bytes": stats.get("peak_bytes_in_use"),
          "step_seconds": float(np.median(times)), "compile_seconds": compile_seconds,
          "final_loss": float(loss)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=sorted(CONFIGS), default="pixart")
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--variants", default=None, help="comma list of localized,full (default per model)")
  parser.add_argument("--blocks", default=None, help="the localized blocks (default per model)")
  parser.add_argument("--batch", type=int, default=None, help="default per model: pixart 8, flux 1")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--steps", type=int, default=5, help="timed steps after compilation")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  blocks = args.blocks or LOCALIZED[(args.model, args.preset)]
  args.batch = args.batch or BATCH[args.model]

  rows = []
  for variant in (args.variants.split(",") if args.variants else VARIANTS[args.model]):
    # A fresh process per variant: the device's peak-memory counter then belongs to that variant
    # alone (it cannot be reset within a process).
    with multiprocessing.get_context("spawn").Pool(1) as pool:
      try:
        rows.append(pool.apply(run_variant, (args.model, args.preset, variant, blocks, args.batch,
                                             args.dtype, args.steps)))
      except Exception as error:   # one variant failing (e.g. out of memory) still reports the rest
        print(f"{variant}: {type(error).__name__}: {error}")
        rows.append({"variant": variant, "error": f"{type(error).__name__}: {error}"[:300]})

  def size(b):
    if not b:
      return "-"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"

  table = [{"variant": r["variant"], "blocks": r.get("blocks", ""),
            "trainable params": f"{r['trainable_parameters']:,}" if "trainable_parameters" in r else "-",
            "grad+opt": size(r.get("grad_and_optimizer_bytes")),
            "XLA peak": size(r.get("xla_plan_bytes", {}).get("peak")),
            "measured peak": size(r.get("measured_peak_bytes")),
            "step s": f"{r['step_seconds']:.3f}" if "step_seconds" in r else r.get("error", "")}
           for r in rows]
  result = {"model": args.model, "preset": args.preset, "batch": args.batch, "dtype": args.dtype,
            "device": timing.device_name(), "rows": rows}
  ok = {r["variant"]: r for r in rows if "step_seconds" in r}
  if {"localized", "full"} <= set(ok):
    loc, full = ok["localized"], ok["full"]
    result["ratios"] = {
        "grad_and_optimizer_bytes": loc["grad_and_optimizer_bytes"] / full["grad_and_optimizer_bytes"],
        "step_seconds": loc["step_seconds"] / full["step_seconds"],
        "xla_peak_bytes": loc["xla_plan_bytes"]["peak"] / full["xla_plan_bytes"]["peak"]}
    result["targets"] = {"grad_and_optimizer_bytes": 0.5, "step_seconds": 0.75}
  print(f"\nfine-tuning step, {args.model} ({args.preset}), batch {args.batch}, {args.dtype} on "
        f"{result['device']}")
  timing.print_table(table, list(table[0]))
  if "ratios" in result:
    print("localized / full: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))
  timing.write_result(args.out or timing.result_path(f"finetune_step_{args.model}_{args.preset}",
                                                     jax.default_backend() == "gpu"), result)


if __name__ == "__main__":
  main()
