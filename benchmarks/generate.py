"""End-to-end denoising speed: our jitted JAX loop vs diffusers' pipeline, same run, same inputs.

    python benchmarks/generate.py --model pixart                 # PixArt-XL-2 1024px, 20 steps, CFG, bf16, GPU
    python benchmarks/generate.py --model sana                   # SANA-1600M 1024px, flow DPM-Solver++
    python benchmarks/generate.py --model pixart --preset tiny   # CPU check of the harness

diffusers runs its own pipeline loop, eager and with the transformer compiled inside it:
torch.compile(mode="max-autotune") on the fused-QKV transformer, and the default mode if
--compile-modes asks (benchmarks/diffusers_baselines.py; on a GPU only unless --compile yes).

Both sides get the same prompt embeddings, the same noise and the same scheduler config, and stop at
the final latents (text encoding and VAE decoding run once per prompt in PyTorch on both sides, so they
are left out). Reports seconds per batch (median of 5 timed loops by default; the JSON has the min),
images/s, model TFLOP/s and MFU (analytic FLOPs of the loop's forward passes, benchmarks/flops.py:
steps x one forward of the CFG batch; the scheduler's elementwise work is not counted) and the
ratios; writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import diffusers_baselines as baselines
from benchmarks import timing
from benchmarks.forward import pixart_case, preset_flops, sana_case
from dit_jax import families
from dit_jax.diffusion import denoise, schedulers
from ports import checkpoints as common
from dit_jax.pipeline import loading

# SANA's published scheduler: DPM-Solver++ on rectified-flow sigmas, shifted.
SANA_SCHEDULER = dict(algorithm_type="dpmsolver++", solver_order=2, prediction_type="flow_prediction",
                      use_flow_sigmas=True, flow_shift=3.0, final_sigmas_type="zero")

# model -> (case builder, diffusers pipeline class, DPMSolverMultistepScheduler config, VAE downsampling)
MODELS = {"pixart": (pixart_case, "PixArtAlphaPipeline", {}, 8),
          "sana": (sana_case, "SanaPipeline", SANA_SCHEDULER, 32)}

DEFAULT_GUIDANCE = 4.5
# The timed entries of a generate result, in the order the table prints them.
ENTRIES = ("diffusers", baselines.COMPILED_ENTRY["default"], baselines.COMPILED_ENTRY["max-autotune"], "flax")


def analytic_flops(result: dict) -> int:
  """FLOPs of the denoising loop a generate result timed: one forward per step, of 2 x batch rows
  under CFG (guidance > 1). Results from before the JSON recorded guidance used the default."""
  rows = result["batch"] * (2 if result.get("guidance", DEFAULT_GUIDANCE) > 1 else 1)
  return result["steps"] * preset_flops(result["model"], result["preset"], rows)


@dataclasses.dataclass
class Sampling:
  """One model's denoising on both sides, from the same weights and inputs.

  run_diffusers() -> diffusers' final latents (torch, NCHW) from the pipeline's transformer, which
  `pipe` may swap (pipe.transformer = a compiled one); loop(params, noise, cond) -> ours (un-jitted,
  NHWC); `noise` and `cond` are the JAX inputs that match diffusers' inputs.
  """
  run_diffusers: Callable[[], torch.Tensor]
  pipe: object
  sync: Callable
  module: object
  loop: Callable
  params: dict
  noise: jax.Array
  cond: dict


def make_sampling(model: str, preset: str, batch: int, steps: int, guidance: float,
                  dtype: str) -> Sampling:
  import diffusers
  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  torch_dtype, jax_dtype = getattr(torch, dtype), jnp.dtype(dtype)
  make_case, pipeline_class, scheduler_config, downsample = MODELS[model]
  case = make_case(preset, batch, torch_dtype, device)
  torch_model = case.torch_model
  scheduler = diffusers.DPMSolverMultistepScheduler(**scheduler_config)
  pipe = getattr(diffusers, pipeline_class)(tokenizer=None, text_encoder=None, vae=None,
                                            transformer=torch_model, scheduler=scheduler)
  pipe.set_progress_bar_config(disable=True)
  caption, mask = case.flax_args[2], case.flax_args[3]
  uncond = np.random.default_rng(5).standard_normal(caption.shape).astype(np.float32)
  size, channels = torch_model.config.sample_size, torch_model.config.in_channels
  noise = np.random.default_rng(6).standard_normal((batch, channels, size, size)).astype(np.float32)
  to = lambda a, dt=torch_dtype: torch.from_numpy(a).to(device=device, dtype=dt)

  @torch.inference_mode()
  def run_diffusers():
    return pipe(prompt_embeds=to(caption), prompt_attention_mask=to(mask, torch.long), negative_prompt=None,
                negative_prompt_embeds=to(uncond), negative_prompt_attention_mask=to(mask, torch.long),
                latents=to(noise), num_inference_steps=steps, guidance_scale=guidance,
                height=size * downsample, width=size * downsample, output_type="latent",
                use_resolution_binning=False, return_dict=False)[0]

  state = {k: common.torch_to_numpy(v) for k, v in torch_model.state_dict().items()}
  module, params = loading.from_state_dict(families.get(model), dict(torch_model.config), state,
                                           dtype=jax_dtype)
  del state
  jax_scheduler = schedulers.from_diffusers(
      {**scheduler.config, "_class_name": type(scheduler).__name__}, steps)
  predict = families.get(model).predictor(module, guidance)
  cond = {"caption": caption, "caption_mask": mask, "uncond_caption": uncond, "uncond_caption_mask": mask}
  if getattr(module.config, "additional_conditions", False):
    cond.update(resolution=np.full((batch, 2), size * downsample * 1.0, np.float32),
                aspect_ratio=np.ones((batch, 1), np.float32))
  # On the device once: host weights would be copied to it at every timed call.
  return Sampling(run_diffusers, pipe, (lambda out: torch.cuda.synchronize()) if cuda else (lambda out: out),
                  module, lambda p, x, c: denoise.denoise(predict, jax_scheduler, p, x, c),
                  jax.device_put(params),
                  jnp.asarray(np.transpose(noise, (0, 2, 3, 1))),
                  jax.tree_util.tree_map(jnp.asarray, cond))


def nhwc_numpy(latents: torch.Tensor) -> np.ndarray:
  return np.transpose(latents.float().cpu().numpy(), (0, 2, 3, 1))


def diffusers_baselines(run: Sampling, modes: tuple[str, ...], iters: int, sdpa: str = "auto") -> dict:
  """diffusers' pipeline loop eager (entry "diffusers") and with its transformer compiled in `modes`
  (benchmarks/diffusers_baselines.py); the pipeline keeps its eager transformer afterwards."""
  transformer = run.pipe.transformer

  def call_with(module):
    run.pipe.transformer = module
    return run.run_diffusers

  try:
    return baselines.time_baselines(transformer, call_with, run.sync, modes=modes, sdpa=sdpa,
                                    eager_entry="diffusers", fused_eager=False, warmup=1, iters=iters)
  finally:
    run.pipe.transformer = transformer


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=sorted(MODELS), default="pixart")
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=1, help="prompts per batch (CFG doubles it)")
  parser.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  # The default mode adds a second build of the transformer, for a number the loop rarely needs.
  baselines.add_arguments(parser, modes=("max-autotune",))
  parser.add_argument("--iters", type=int, default=5)
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)

  cuda = torch.cuda.is_available()
  modes = baselines.compile_modes(args.compile, args.compile_modes, cuda)
  run = make_sampling(args.model, args.preset, args.batch, args.steps, args.guidance, args.dtype)
  reference = nhwc_numpy(run.run_diffusers())
  result = diffusers_baselines(run, modes, args.iters, args.sdpa_backend)
  if cuda:
    torch.cuda.empty_cache()
  compiled = jax.jit(run.loop).lower(run.params, run.noise, run.cond).compile()
  call = lambda: compiled(run.params, run.noise, run.cond)
  result["flax"] = timing.time_call(call, jax.block_until_ready, warmup=1, iters=args.iters)
  ours = np.asarray(call(), np.float32)
  err = float(np.linalg.norm(ours - reference) / np.linalg.norm(reference))

  names = [name for name in ENTRIES if name in result]
  rows = timing.speed_rows(result, args.batch, "batch", names)
  result.update(model=args.model, preset=args.preset, steps=args.steps, batch=args.batch,
                guidance=args.guidance, dtype=args.dtype, device=timing.device_name(),
                final_latent_rel_error=err)
  timing.add_flops(result, analytic_flops(result))
  for row, name in zip(rows, names):
    entry = result[name]
    row.update({"TFLOP/s": timing.figure(entry["analytic_tflops"]), "MFU": timing.percent(entry["mfu"]),
                "how": baselines.notes(entry)})
  print(f"\n{args.model} ({args.preset}) {args.steps} steps, batch {args.batch} x2 CFG, {args.dtype} on "
        f"{result['device']}; final latents rel. error vs diffusers {err:.2e}")
  print(baselines.describe(result))
  timing.print_table(rows, list(rows[0]))
  timing.write_result(args.out or timing.result_path(f"generate_{args.model}_{args.preset}",
                                                     torch.cuda.is_available()), result)


if __name__ == "__main__":
  main()
