"""Where users run today: the shipped Shapes model on a CPU, ours vs diffusers in the same run.

    python benchmarks/shapes_cpu.py                 # 16 images, 20 steps, CFG 4.5; 12 single-block interventions
    python benchmarks/shapes_cpu.py --batch 4 --steps 4 --iters 1 --sweep-iters 1   # a quick check

Generation: our jitted denoising loop (Text2Image.denoise) vs diffusers' PixArtAlphaPipeline on the
same folder, the same prompt embeddings and the same noise, to the final latents (the model works on
pixels: there is no VAE). Sweep: sweep_lib.run_interventions with one intervention per block
(the neutral prompt in block b only), every row of the batch, vs one plain diffusers generation per
block (what a user without batched interventions would run; a hooked intervention costs at least as
much). The sweep is timed warm: a localization run compiles it once and reuses it for every concept
(the first call, with compilation, is reported too). Writes JSON and prints the ratios (targets:
generation >= 1.4x, sweep >= 1.5x).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# As localize.py and generate.py start (before JAX starts): one single-threaded device per core,
# every row split over them (DIT_JAX_CPU_DEVICES=1: one device on every core, as before).
from dit_jax import sharding  # noqa: E402
sharding.one_cpu_device_per_core()

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import timing
from dit_jax.diffusion import denoise
from configs import shapes
from dit_jax.localize import sweep as sweep_lib
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import ASSETS

PROMPT, NEUTRAL = "a red circle on the left in the sky, dotted style", "a shape on the left in the sky, dotted style"
SIZE = (32, 32)


def diffusers_generation(folder: str, steps: int, guidance: float, cond: dict, noise: np.ndarray):
  """fn() -> final latents of diffusers' pipeline on `folder` for these embeddings and noise."""
  import diffusers
  pipe = diffusers.PixArtAlphaPipeline.from_pretrained(folder, tokenizer=None, text_encoder=None,
                                                       vae=None)
  pipe.set_progress_bar_config(disable=True)
  t = lambda a, dtype=torch.float32: torch.from_numpy(np.asarray(a)).to(dtype)
  latents = t(np.transpose(noise, (0, 3, 1, 2)))

  @torch.inference_mode()
  def run():
    return pipe(prompt_embeds=t(cond["caption"]), prompt_attention_mask=t(cond["caption_mask"], torch.long),
                negative_prompt=None, negative_prompt_embeds=t(cond["uncond_caption"]),
                negative_prompt_attention_mask=t(cond["uncond_caption_mask"], torch.long),
                latents=latents, num_inference_steps=steps, guidance_scale=guidance,
                height=SIZE[0], width=SIZE[1], output_type="latent", use_resolution_binning=False,
                return_dict=False)[0]
  return run


def shipped_images_per_call() -> int:
  """Images in one compiled sweep call of the shipped localization run (configs/shapes.py)."""
  config = shapes.get_config()
  return (config.knowledge.prompts_per_concept * len(config.sample.seeds)
          * config.hosts.intervention_chunk)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=16, help="images per generation (seeds)")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--guidance", type=float, default=4.5)
  # Timed in turn with diffusers (timing.time_alternating): one slow minute hits both sides.
  parser.add_argument("--iters", type=int, default=7, help="timed generations per side")
  parser.add_argument("--sweep-iters", type=int, default=3, help="timed sweeps per side")
  # As many images per compiled call as the shipped localization run makes (configs/shapes.py:
  # prompts per concept x seeds x intervention_chunk = 16): on a CPU larger vmapped batches fall
  # out of the caches (a call of 12 interventions x 16 images ran 1.7x slower than three of 4;
  # 4 x 16 images per call 1.2x slower than 1 x 16).
  parser.add_argument("--chunk", type=int, default=None,
                      help="interventions per compiled call (default: the shipped run's images per "
                           "call divided by --batch)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  if args.chunk is None:
    args.chunk = max(1, shipped_images_per_call() // args.batch)

  folder = str(ASSETS)
  pipe = Text2Image("pixart", folder, num_steps=args.steps, guidance_scale=args.guidance,
                    max_sequence_length=32)
  hosts = shapes.get_config().hosts
  pipe.use_local_devices(hosts.num_devices, hosts.fsdp)
  seeds = list(range(args.batch))
  cond = pipe.conditioning([PROMPT] * args.batch, *SIZE)
  noise = np.asarray(denoise.noise_for_seeds(seeds, pipe.latent_shape(*SIZE)))
  jax_cond = jax.tree_util.tree_map(jnp.asarray, cond)
  ours = lambda: pipe.denoise(jnp.asarray(noise), jax_cond)
  theirs = diffusers_generation(folder, args.steps, args.guidance, cond, noise)

  reference = np.transpose(theirs().numpy(), (0, 2, 3, 1))
  err = float(np.linalg.norm(np.asarray(ours()) - reference) / np.linalg.norm(reference))
  generation = timing.time_alternating({"diffusers": (theirs, lambda out: out),
                                         "flax": (ours, jax.block_until_ready)}, 1, args.iters)

  blocks = pipe.module.config.num_blocks
  plan = [sweep_lib.Intervention("single", 1, (b,)) for b in range(blocks)]
  sweep = lambda: sweep_lib.run_interventions(pipe, [PROMPT], [NEUTRAL], seeds, SIZE, plan,
                                                 chunk=args.chunk)
  start = time.perf_counter()
  sweep()
  first_s = time.perf_counter() - start
  sweeps = timing.time_alternating({"flax": (sweep, lambda out: out),
                                     "diffusers": (lambda: [theirs() for _ in plan], lambda out: out)},
                                    0, args.sweep_iters)
  sweeps["flax_first_call_s"] = first_s

  ratio = lambda r: r["diffusers"]["median_ms"] / r["flax"]["median_ms"]
  result = {"device": timing.device_name(), "batch": args.batch, "steps": args.steps,
            "guidance": args.guidance, "interventions": len(plan), "chunk": args.chunk,
            "devices": jax.device_count(),
            "final_latent_rel_error": err,
            "generation": generation, "sweep": sweeps,
            "ratios": {"generation": ratio(generation), "sweep": ratio(sweeps)},
            "targets": {"generation": 1.4, "sweep": 1.5}}
  rows = [{"task": f"generate {args.batch} images", "diffusers s": f"{generation['diffusers']['median_ms'] / 1e3:.2f}",
           "dit_jax s": f"{generation['flax']['median_ms'] / 1e3:.2f}", "ratio": f"{ratio(generation):.2f}x",
           "target": ">= 1.4x"},
          {"task": f"{len(plan)} interventions x {args.batch}", "diffusers s": f"{sweeps['diffusers']['median_ms'] / 1e3:.2f}",
           "dit_jax s": f"{sweeps['flax']['median_ms'] / 1e3:.2f} (first {first_s:.2f})",
           "ratio": f"{ratio(sweeps):.2f}x", "target": ">= 1.5x"}]
  print(f"\nShapes model, {args.steps} steps, CFG {args.guidance}, on {result['device']}; final latents "
        f"rel. error vs diffusers {err:.1e}")
  timing.print_table(rows, list(rows[0]))
  timing.write_result(args.out or timing.result_path("shapes", False), result)
  return result


if __name__ == "__main__":
  main()
