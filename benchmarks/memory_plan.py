"""XLA's memory plan of the generic trainer's step at real sizes, compiled from abstract shapes
(jax.ShapeDtypeStruct): no weight is allocated and nothing runs, so it answers "will it fit" on any
machine, a CPU included.

    python benchmarks/memory_plan.py --model pixart   # PixArt-XL-2 512px, batch 8: 5 of 28 blocks vs all
    python benchmarks/memory_plan.py --model flux     # FLUX.1-dev 1024px, batch 1: 6 blocks full and LoRA r16
    python benchmarks/memory_plan.py --model pixart --preset tiny   # the harness in seconds
    python benchmarks/memory_plan.py --model pixart --remat --target tpu:v5p   # XLA's TPU compiler

By default the step is compiled for this machine's backend; XLA's CPU backend neither schedules for
memory nor honours rematerialisation, so on a CPU the temporaries are upper bounds. --target
tpu:<generation> compiles it for one TPU chip through libtpu's deviceless topologies (no TPU needed,
libtpu installed, best in its own environment): an accelerator compiler's plan on any machine.

The step is the trainer's own (dit_jax/train/trainer.py): the family's predictor on a training batch, the
forward process of the family's scheduler (PixArt DDPM epsilon, FLUX flow matching with its guidance
input), gradients w.r.t. the selected blocks or their LoRA factors only, AdamW state for those.
bf16 weights and compute, float32 master weights for what trains (as the trainer keeps them).
Targets (issue #15): PixArt localized <= 0.5 x the full step's peak; FLUX 6-block plan < 80 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.train import lora, objectives, loop
from dit_jax.diffusion.noising import Noising

# model -> preset -> (diffusers transformer config, latent NHWC shape, text length, scheduler config)
CASES = {
    "pixart": {
        "full": (dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, cross_attention_dim=1152,
                      caption_channels=4096, sample_size=64, in_channels=4, out_channels=8,
                      use_additional_conditions=False), (64, 64, 4), 120),
        "tiny": (dict(num_layers=4, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32,
                      caption_channels=16, sample_size=16, in_channels=4, out_channels=8,
                      use_additional_conditions=False), (16, 16, 4), 8)},
    "flux": {
        "full": (dict(guidance_embeds=True), (128, 128, 16), 512),     # FLUX.1-dev, 1024px
        "tiny": (dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                      joint_attention_dim=32, pooled_projection_dim=16, in_channels=16,
                      axes_dims_rope=(4, 6, 6), guidance_embeds=True), (8, 8, 4), 8)},
}
SCHEDULERS = {"pixart": {"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "epsilon"},
              "flux": {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0,
                       "use_dynamic_shifting": True}}
# (name, blocks, LoRA rank); blocks in localization's numbering (FLUX: D0..D18 then S0..S37).
VARIANTS = {
    ("pixart", "full"): [("5 of 28 blocks", "3,8,13,18,23", 0), ("all 28 blocks", "all", 0)],
    ("pixart", "tiny"): [("2 of 4 blocks", "1,3", 0), ("all blocks", "all", 0)],
    ("flux", "full"): [("6 blocks, full weights", "D0,D6,D12,S0,S12,S24", 0),
                       ("6 blocks, LoRA r16", "D0,D6,D12,S0,S12,S24", 16)],
    ("flux", "tiny"): [("2 blocks, full weights", "D1,S0", 0), ("2 blocks, LoRA r4", "D1,S0", 4)],
}
BATCH = {"pixart": 8, "flux": 1}


def abstract(tree, dtype=None):
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, dtype or x.dtype), tree)


def target_device(target: str):
  """The device the step is compiled for: this machine's default, or an accelerator compiled for
  without one ("tpu:v5p" etc.: XLA's TPU compiler through libtpu's deviceless topologies, so a CPU-only
  machine gets an accelerator compiler's memory plan, with its scheduling and buffer reuse)."""
  if target == "local":
    return None
  platform, _, generation = target.partition(":")
  if platform != "tpu" or not generation:
    raise SystemExit(f"--target {target!r}: use 'local' or 'tpu:<generation>' (e.g. tpu:v5p)")
  from jax.experimental import topologies
  try:
    # One host's chips (the smallest topology libtpu describes); the step is compiled for one chip.
    topology = topologies.get_topology_desc(platform="tpu", topology_name=f"{generation}:2x2x1"
                                            if generation in ("v4", "v5p") else f"{generation}:2x2")
  except Exception as error:    # libtpu missing or too old: say how to get it
    raise SystemExit(f"--target {target}: no TPU compiler here ({error}); pip install "
                     "'jax[tpu]' (libtpu) in a separate environment") from error
  return topology.devices[0]


def place(tree, device):
  """Abstract arrays committed to `device` (None: left to the default backend)."""
  if device is None:
    return tree
  from jax.sharding import SingleDeviceSharding
  sharding = SingleDeviceSharding(device)
  return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                                tree)


def plan(model: str, preset: str, blocks: str, rank: int, batch: int, dtype, remat: bool,
         device=None) -> dict:
  from dit_jax import blocks as blocks_lib
  config_dict, latent, text_len = CASES[model][preset]
  fam = families.get(model)
  config = fam.config_cls.from_diffusers(config_dict)
  module = fam.module_cls(config=config, dtype=dtype)
  params = place(abstract(loading.param_shapes(fam, config), dtype), device)
  chosen = blocks_lib.select_blocks(blocks, config.num_blocks, labels=config.block_labels)
  if rank:
    frozen = traverse_util.flatten_dict(params)
    every = chosen if chosen is not None else list(range(config.num_blocks))
    trainable = jax.eval_shape(lambda: lora.init(frozen, blocks_lib.parameter_selector(every, config), rank,
                                                 targets=fam.lora_targets))
    combine = lora.combiner(rank, float(rank))
  else:
    trainable, frozen = loop.split_params(params, blocks_lib.parameter_selector(chosen, config))
    trainable, combine = abstract(trainable, jnp.float32), loop.merge_params
  optimizer = loop.make_optimizer(1e-4, 0, 1000)
  state = place(loop.TrainState(jax.ShapeDtypeStruct((), jnp.int32), trainable,
                                    jax.eval_shape(optimizer.init, trainable), None,
                                    jax.ShapeDtypeStruct((2,), jnp.uint32)), device)
  guidance = 3.5 if fam.guidance == "distilled" else 1.0
  predict = fam.predictor(module.clone(remat=remat), guidance)
  loss_fn = objectives.get("diffusion").make_loss(predict, Noising.from_scheduler_config(SCHEDULERS[model]), {})
  text_dim = getattr(config, "caption_channels", None) or getattr(config, "joint_attention_dim")
  cond = {"caption": jax.ShapeDtypeStruct((batch, text_len, text_dim), dtype)}
  if fam.guidance == "cfg":
    cond["caption_mask"] = jax.ShapeDtypeStruct((batch, text_len), jnp.int32)
  else:
    cond["pooled"] = jax.ShapeDtypeStruct((batch, config.pooled_projection_dim), dtype)
  data = place({"x0": jax.ShapeDtypeStruct((batch, *latent), jnp.float32), "cond": cond}, device)
  step = loop.make_train_step(loss_fn, optimizer, frozen, combine=combine)
  began = time.perf_counter()
  memory = step.memory(state, data)
  nbytes = lambda tree: int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                                for x in jax.tree_util.tree_leaves(tree)))
  count = lambda tree: int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))
  return {"blocks": blocks, "lora_rank": rank, "remat": remat,
          "trainable_parameters": count(trainable),
          "weights_bytes": nbytes(frozen) + nbytes(trainable),
          "grad_and_optimizer_bytes": nbytes(trainable) + nbytes(state.opt_state),
          "xla_plan_bytes": memory, "compile_seconds": time.perf_counter() - began}


def _gib(size: int) -> str:
  return f"{size / 2**30:.2f} GiB" if size < 10 * 2**30 else f"{size / 2**30:.1f} GiB"


def _count(n: int) -> str:
  return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.1f} M" if n < 1e7 else f"{n / 1e6:.0f} M"


def _peak(row: dict) -> int:
  return row["xla_plan_bytes"]["peak"]


# What the plans are held against: localized PixArt at most half of full fine-tuning's peak (with
# --remat), FLUX.1-dev's 6-block step under one 80 GB accelerator.
PIXART_TARGET, FLUX_TARGET_BYTES = 0.5, 80e9


def readme_table(results: str) -> str:
  """The results page's memory table and its figures, from the stored TPU v5p plans (and the CPU
  backend's totals beside them). Every comparison word (met, less than half, most, above) is
  computed from the plans."""
  load = lambda name: json.load(open(os.path.join(results, f"memory_plan_{name}.json")))
  pixart, pixart_remat = load("pixart_full_tpu_v5p"), load("pixart_full_tpu_v5p_remat")
  flux = load("flux_full_tpu_v5p_remat")
  sizes = lambda row: (f"{_count(row['trainable_parameters'])} | {_gib(row['weights_bytes'])} | "
                       f"{_gib(row['grad_and_optimizer_bytes'])}")
  lines = ["| step (TPU v5p plan) | trainable params | weights | grad + AdamW | peak, no remat "
           "| peak, `--remat` |", "|---|---|---|---|---|---|"]
  for plain, remat in zip(pixart["rows"], pixart_remat["rows"]):
    bold = "**" if remat is pixart_remat["rows"][0] else ""
    lines.append(f"| PixArt-XL-2 512px, batch {pixart['batch']}, {plain['variant']} | {sizes(plain)} "
                 f"| {_gib(_peak(plain))} | {bold}{_gib(_peak(remat))}{bold} |")
  lines.append(f"| localized / full | | | | {pixart['localized_over_full']:.2f} | "
               f"**{pixart_remat['localized_over_full']:.2f}** |")
  for row in flux["rows"]:
    lines.append(f"| FLUX.1-dev 1024px, batch {flux['batch']}, {row['variant']} ({row['blocks']}) | "
                 f"{sizes(row)} | - | **{_gib(_peak(row))}** ({_peak(row) / 1e9:.1f} GB) |")
  cpu = [load(f"{m}_full_cpu_remat") for m in ("pixart", "flux")]
  totals = [f"{r['xla_plan_bytes']['total'] / 2**30:.0f} GiB" for plan in cpu for r in plan["rows"]]
  five = pixart["rows"][0]
  frozen = (five["weights_bytes"] - 4 * five["trainable_parameters"]) / 2
  minutes = [r["compile_seconds"] / 60 for plan in (pixart, pixart_remat, flux) for r in plan["rows"]]
  flux_plans = " and ".join(f"{_peak(r) / 1e9:.1f} GB ({r['variant']})" for r in flux["rows"])
  ratio = pixart_remat["localized_over_full"]
  met = lambda ok: "met" if ok else "not met"
  flux_under = all(_peak(r) < FLUX_TARGET_BYTES for r in flux["rows"])
  # Temporaries (the activations kept for the backward pass among them) as a share of each plan.
  share = lambda plan: [r["xla_plan_bytes"]["temporaries"] / _peak(r) for r in plan["rows"]]
  plain_share, remat_share = share(pixart), share(pixart_remat)
  most = lambda shares: ("most" if min(shares) > 0.5 else "less than half" if max(shares) < 0.5
                         else "some")
  percents = lambda shares: " and ".join(f"{100 * x:.0f} %" for x in shares)
  tpu = [r for plan in (pixart_remat, flux) for r in plan["rows"]]
  over = [c["xla_plan_bytes"]["total"] / _peak(t) for c, t in
          zip([r for plan in cpu for r in plan["rows"]], tpu)]
  flux_plain = os.path.exists(os.path.join(results, "memory_plan_flux_full_tpu_v5p.json"))
  return ("\n".join(lines) + "\n\n"
          f"Localized PixArt fine-tuning plans {ratio:.2f}x the memory of full fine-tuning with "
          f"`--config.remat=True` ({pixart['localized_over_full']:.2f}x without): "
          f"{'less than half' if ratio < 0.5 else 'half or more'} (target <= {PIXART_TARGET}: "
          f"{met(ratio <= PIXART_TARGET)}). FLUX.1-dev's 6-block step plans {flux_plans}: "
          f"{'each' if flux_under else 'not each'} under {FLUX_TARGET_BYTES / 1e9:.0f} GB (target < "
          f"{FLUX_TARGET_BYTES / 1e9:.0f} GB: {met(flux_under)})" + ("" if flux_plain else "; its plans without remat were not compiled")
          + f". In PixArt's plans the temporaries (the activations kept for the backward pass among "
          f"them) are {most(plain_share)} of the peak without remat ({percents(plain_share)}: 5 blocks, "
          f"all) and {most(remat_share)} with it ({percents(remat_share)}). XLA's CPU backend "
          f"(`memory_plan_*_cpu_remat.json`) totals {', '.join(totals)} for the same four steps, "
          f"{'each above' if min(over) > 1 else 'not all above'} the TPU plan with remat "
          f"({min(over):.0f}x to {max(over):.0f}x). "
          f"The weights column for PixArt's 5 blocks: 2 B x {frozen / 1e6:.0f} M frozen + 4 B x "
          f"{five['trainable_parameters'] / 1e6:.0f} M trained = {five['weights_bytes'] / 1e9:.2f} GB "
          f"({_gib(five['weights_bytes'])}). Each TPU plan compiled in {min(minutes):.0f} to "
          f"{max(minutes):.0f} min on this project's CPU-only machine.\n")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=sorted(CASES), default="pixart")
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--batch", type=int, default=None)
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  parser.add_argument("--remat", action="store_true", help="jax.checkpoint per block")
  parser.add_argument("--target", default="local",
                      help="'local' (this machine's backend) or 'tpu:v5p' (deviceless TPU compile)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  batch = args.batch or BATCH[args.model]
  device = target_device(args.target)
  backend = jax.default_backend() if device is None else args.target.replace(":", "_")
  rows = []
  for name, blocks, rank in VARIANTS[(args.model, args.preset)]:
    row = {"variant": name, **plan(args.model, args.preset, blocks, rank, batch, jnp.dtype(args.dtype),
                                   args.remat, device)}
    rows.append(row)
    print(f"{name:28s} trainable {row['trainable_parameters']:>14,}  weights {_gib(row['weights_bytes'])}"
          f"  grad+Adam {_gib(row['grad_and_optimizer_bytes'])}  XLA peak {_gib(row['xla_plan_bytes']['peak'])}"
          f"  (arguments {_gib(row['xla_plan_bytes']['arguments'])}, temporaries "
          f"{_gib(row['xla_plan_bytes']['temporaries'])}; compiled in {row['compile_seconds']:.0f} s)",
          flush=True)
  result = {"model": args.model, "preset": args.preset, "batch": batch, "dtype": args.dtype,
            "remat": args.remat, "backend": backend, "rows": rows}
  if args.model == "pixart":
    # "peak" (loop.TrainStep.memory: arguments + temporaries + unaliased outputs, everything
    # the step's buffers take at once) is the figure the targets are read on.
    result["localized_over_full"] = rows[0]["xla_plan_bytes"]["peak"] / rows[1]["xla_plan_bytes"]["peak"]
    print(f"localized / full (XLA peak): {result['localized_over_full']:.2f} (target <= 0.5)")
  else:
    print("FLUX 6-block plans: " + ", ".join(f"{r['variant']} {r['xla_plan_bytes']['peak'] / 1e9:.1f} GB"
                                              for r in rows) + " (target < 80 GB)")
  out = args.out or os.path.join("results",
                                 f"memory_plan_{args.model}_{args.preset}_{backend}"
                                 f"{'_remat' if args.remat else ''}.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
