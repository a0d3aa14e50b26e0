"""Forward-pass speed: our Flax backbone vs diffusers eager and torch.compile, same run, same weights.

    python benchmarks/forward.py --model pixart                 # full PixArt-XL-2 1024px, bf16, GPU
    python benchmarks/forward.py --model pixart --preset tiny   # seconds on a CPU: checks the harness
    python benchmarks/forward.py --model flux --compile-modes max-autotune --sdpa-backend flash

diffusers is timed eager, eager with fused QKV projections, in torch.compile's default mode and in
torch.compile(mode="max-autotune") on the fused model (benchmarks/diffusers_baselines.py: what each
entry means; the JSON records whether fusion applied, the SDPA backends used and each build time).
torch.compile runs on a GPU only unless --compile yes: it takes minutes to build on a CPU.

Models (full presets, docs/design.md, "Speed"): pixart (PixArt-XL-2 1024px, batch 2), sana (SANA-1600M
1024px, batch 2), flux (FLUX.1-dev 1024px: 4096 image + 512 text tokens, guidance embeds, batch 1).

The Flax weights are converted from the diffusers model being timed (through ports/checkpoints.py), the inputs
are the same arrays, and the two outputs are compared. Writes JSON and prints a table with each
implementation's time, model TFLOP/s and MFU, and the speed ratios.

FLOPs are counted analytically (benchmarks/flops.py: analytic_gflop, and per implementation
analytic_tflops and mfu against the device's peak dense bf16 TFLOP/s; mfu is null for a device or
dtype without a known peak). gflop and tflops are XLA's cost analysis of the Flax forward, kept for
comparison: on a GPU it does not count the cuBLAS/cuDNN custom calls that do the matmuls and the
attention, so it reports a fraction of the work (29 of 13,019 GFLOP for PixArt-XL-2 1024px).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# JAX must not take all GPU memory while the PyTorch model is resident.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
import torch

from benchmarks import diffusers_baselines as baselines
from benchmarks import timing
from dit_jax import families
from benchmarks import flops
from ports import checkpoints as common
from dit_jax.pipeline import loading


@dataclasses.dataclass(frozen=True)
class Size:
  """A model at one preset: its diffusers config and the shape of its inputs."""
  config: dict
  grid: int            # side of the input grid: latents (PixArt, SANA), packed tokens (FLUX)
  text_tokens: int     # caption length


def pixart_size(preset: str) -> Size:
  if preset in ("full", "512"):   # PixArt-XL-2-1024-MS; PixArt-XL-2-512x512 (no micro-conditions)
    config = dict(num_layers=28, num_attention_heads=16, attention_head_dim=72, cross_attention_dim=1152,
                  caption_channels=4096, sample_size=128, in_channels=4, out_channels=8,
                  use_additional_conditions=True, norm_type="ada_norm_single",
                  norm_elementwise_affine=False, num_embeds_ada_norm=1000)
    if preset == "512":
      config.update(sample_size=64, use_additional_conditions=False)
    seq = 120
  else:
    # No micro-conditions: PixArtAlphaPipeline passes them only at sample_size 128 (generate.py).
    config = dict(num_layers=4, num_attention_heads=4, attention_head_dim=24, cross_attention_dim=96,
                  caption_channels=64, sample_size=32, in_channels=4, out_channels=8,
                  use_additional_conditions=False, norm_type="ada_norm_single",
                  norm_elementwise_affine=False, num_embeds_ada_norm=1000)
    seq = 16
  return Size(config, config["sample_size"], seq)


def sana_size(preset: str) -> Size:
  if preset == "full":   # Sana_1600M_1024px: 32x32 latents of 32 channels, 300 Gemma-2 tokens
    config = dict(in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32,
                  num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
                  cross_attention_dim=2240, caption_channels=2304, mlp_ratio=2.5, sample_size=32,
                  patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6, attention_bias=False)
    seq = 300
  else:
    config = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
                  num_layers=2, num_cross_attention_heads=2, cross_attention_head_dim=8,
                  cross_attention_dim=16, caption_channels=12, mlp_ratio=2.5, sample_size=8,
                  patch_size=1)
    seq = 16
  return Size(config, config["sample_size"], seq)


def flux_size(preset: str) -> Size:
  if preset == "full":   # FLUX.1-dev 1024px: 64x64 packed latent tokens, 512 T5 tokens
    config = dict(guidance_embeds=True)   # the rest: diffusers' defaults are FLUX.1's
    grid, seq = 64, 512
  else:
    config = dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                  joint_attention_dim=32, pooled_projection_dim=16, in_channels=16,
                  axes_dims_rope=(4, 6, 6), guidance_embeds=True)
    grid, seq = 8, 16
  return Size(config, grid, seq)


SIZES = {"pixart": pixart_size, "sana": sana_size, "flux": flux_size}


def preset_flops(model: str, preset: str, batch: int) -> int:
  """Analytic FLOPs of one forward of `model` at `preset` (benchmarks/flops.py)."""
  size = SIZES[model](preset)
  config = families.get(model).config_cls.from_diffusers(size.config)   # with the defaults filled in
  image_tokens = (size.grid // config.patch_size) ** 2
  return flops.forward_flops(model, config, batch, image_tokens, size.text_tokens)


def analytic_flops(result: dict) -> int:
  """FLOPs of the call a forward result timed, from what its JSON records (run_all --recompute-flops)."""
  return preset_flops(result["model"], result["preset"], result["batch"])


@dataclasses.dataclass
class Case:
  """One model at one size: the diffusers module, its inputs, and how to feed them to Flax."""
  family: str
  torch_model: torch.nn.Module
  torch_kwargs: dict
  flax_args: tuple        # positional inputs of the Flax module (NumPy/JAX arrays)
  to_flax_output: callable = lambda out: out   # torch output -> layout of the Flax output


def new_model(cls, config: dict, dtype, device) -> torch.nn.Module:
  """A seeded random diffusers model, built directly in `dtype` on `device`: FLUX-size models do not
  fit in memory twice (float32 first, then cast)."""
  torch.manual_seed(0)
  default = torch.get_default_dtype()
  torch.set_default_dtype(dtype)
  try:
    with torch.device(device):
      return cls(**config).to(device=device, dtype=dtype).eval()
  finally:
    torch.set_default_dtype(default)


def nhwc(t: torch.Tensor) -> np.ndarray:
  return np.transpose(t.float().cpu().numpy(), (0, 2, 3, 1))


def to_numpy(t: torch.Tensor) -> np.ndarray:
  return t.float().cpu().numpy()


def pixart_case(preset: str, batch: int, dtype, device) -> Case:
  from diffusers import PixArtTransformer2DModel
  shape = pixart_size(preset)
  config, size, seq = shape.config, shape.grid, shape.text_tokens
  model = new_model(PixArtTransformer2DModel, config, dtype, device)
  gen = torch.Generator().manual_seed(1)
  latents = torch.randn(batch, 4, size, size, generator=gen)
  caption = torch.randn(batch, seq, config["caption_channels"], generator=gen)
  mask = torch.ones(batch, seq)
  timestep = torch.full((batch,), 500.0)
  resolution = torch.full((batch, 2), size * 8.0)
  aspect = torch.ones(batch, 1)
  to = lambda t: t.to(device=device, dtype=dtype)
  kwargs = dict(hidden_states=to(latents), encoder_hidden_states=to(caption), timestep=timestep.to(device),
                encoder_attention_mask=mask.to(device),
                added_cond_kwargs={"resolution": to(resolution), "aspect_ratio": to(aspect)})
  flax_args = (nhwc(latents), timestep.numpy(), caption.numpy(), mask.numpy(), resolution.numpy(),
               aspect.numpy())
  return Case("pixart", model, kwargs, flax_args, nhwc)


def sana_case(preset: str, batch: int, dtype, device) -> Case:
  from diffusers import SanaTransformer2DModel
  shape = sana_size(preset)
  config, size, seq = shape.config, shape.grid, shape.text_tokens
  model = new_model(SanaTransformer2DModel, config, dtype, device)
  channels = config["in_channels"]
  gen = torch.Generator().manual_seed(1)
  latents = torch.randn(batch, channels, size, size, generator=gen)
  caption = torch.randn(batch, seq, config["caption_channels"], generator=gen)
  mask = torch.ones(batch, seq)
  timestep = torch.full((batch,), 500.0)
  to = lambda t: t.to(device=device, dtype=dtype)
  kwargs = dict(hidden_states=to(latents), encoder_hidden_states=to(caption), timestep=timestep.to(device),
                encoder_attention_mask=mask.to(device))
  return Case("sana", model, kwargs, (nhwc(latents), timestep.numpy(), caption.numpy(), mask.numpy()),
              nhwc)


def flux_case(preset: str, batch: int, dtype, device) -> Case:
  from diffusers import FluxTransformer2DModel
  from dit_jax.families.flux import latent_image_ids
  shape = flux_size(preset)
  config, grid, seq = shape.config, shape.grid, shape.text_tokens
  model = new_model(FluxTransformer2DModel, config, dtype, device)
  # Input widths from the built model: at the full preset they are diffusers' (FLUX.1's) defaults.
  in_channels, text_dim = model.config.in_channels, model.config.joint_attention_dim
  pooled_dim = model.config.pooled_projection_dim
  gen = torch.Generator().manual_seed(1)
  latents = torch.randn(batch, grid * grid, in_channels, generator=gen)
  caption = torch.randn(batch, seq, text_dim, generator=gen)
  pooled = torch.randn(batch, pooled_dim, generator=gen)
  timestep = torch.full((batch,), 0.5)
  guidance = torch.full((batch,), 3.5)
  img_ids, txt_ids = torch.from_numpy(latent_image_ids(grid, grid)), torch.zeros(seq, 3)
  to = lambda t: t.to(device=device, dtype=dtype)
  kwargs = dict(hidden_states=to(latents), encoder_hidden_states=to(caption), pooled_projections=to(pooled),
                timestep=to(timestep), guidance=guidance.to(device), img_ids=img_ids.to(device),
                txt_ids=txt_ids.to(device))
  flax_args = tuple(t.numpy() for t in (latents, caption, pooled, timestep, img_ids, txt_ids, guidance))
  return Case("flux", model, kwargs, flax_args, to_numpy)


CASES = {"pixart": pixart_case, "sana": sana_case, "flux": flux_case}
DEFAULT_BATCH = {"pixart": 2, "sana": 2, "flux": 1}   # CFG pairs; FLUX.1 is guidance-distilled


def torch_output(model, kwargs):
  out = model(**kwargs, return_dict=False)
  return out[0]


# The timed entries of a forward result, in the order the table prints them.
ENTRIES = ("diffusers_eager", baselines.COMPILED_ENTRY["default"], baselines.FUSED_EAGER_ENTRY,
           baselines.COMPILED_ENTRY["max-autotune"], "flax")


def diffusers_baselines(case: Case, modes: tuple[str, ...], sync, iters: int, sdpa: str = "auto") -> dict:
  """diffusers' forward eager, fused-QKV eager and compiled in `modes` (benchmarks/diffusers_baselines.py).
  Leaves case.torch_model fused where diffusers could fuse it."""
  call_with = lambda module: (lambda: torch_output(module, case.torch_kwargs))
  return baselines.time_baselines(case.torch_model, call_with, sync, modes=modes, sdpa=sdpa, iters=iters)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=sorted(CASES), default="pixart")
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--batch", type=int, default=None, help="default: 2 (CFG) for pixart/sana, 1 for flux")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
  baselines.add_arguments(parser)
  parser.add_argument("--iters", type=int, default=20)
  parser.add_argument("--out", default=None, help="JSON path (default results/...)")
  args = parser.parse_args(argv)

  cuda = torch.cuda.is_available()
  device = "cuda" if cuda else "cpu"
  torch_dtype = getattr(torch, args.dtype)
  jax_dtype = jnp.dtype(args.dtype)
  batch = args.batch or DEFAULT_BATCH[args.model]
  if args.dtype == "float32":  # compare like with like: no TF32 on either side
    torch.backends.cuda.matmul.allow_tf32 = False
    jax.config.update("jax_default_matmul_precision", "highest")

  case = CASES[args.model](args.preset, batch, torch_dtype, device)
  sync = (lambda out: torch.cuda.synchronize()) if cuda else (lambda out: out)
  rows, result = [], {"model": args.model, "preset": args.preset, "batch": batch, "dtype": args.dtype,
                      "device": timing.device_name(), "jax": jax.__version__, "torch": torch.__version__}

  modes = baselines.compile_modes(args.compile, args.compile_modes, cuda)
  published_keys = set(case.torch_model.state_dict())
  with torch.inference_mode():
    reference = case.to_flax_output(torch_output(case.torch_model, case.torch_kwargs))
  result.update(diffusers_baselines(case, modes, sync, args.iters, args.sdpa_backend))

  # Same weights in Flax, through the conversion path users take; then free the GPU for JAX.
  fam = families.get(case.family)
  state = {k: common.torch_to_numpy(v)
           for k, v in baselines.kept_state(case.torch_model, published_keys).items()}
  config = dict(case.torch_model.config)
  del case.torch_model
  if cuda:
    torch.cuda.empty_cache()
  module, params = loading.from_state_dict(fam, config, state, dtype=jax_dtype)
  del state
  params = jax.device_put(params)
  args_dev = tuple(None if a is None else jnp.asarray(a) for a in case.flax_args)
  forward = jax.jit(lambda p, *xs: module.apply({"params": p}, *xs))
  compiled_fn = forward.lower(params, *args_dev).compile()
  cost = compiled_fn.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float(cost.get("flops", 0.0)) if cost else 0.0
  result["flax"] = timing.time_call(lambda: compiled_fn(params, *args_dev), jax.block_until_ready,
                                    iters=args.iters)
  out = np.asarray(compiled_fn(params, *args_dev), np.float32)
  err = float(np.linalg.norm(out - reference) / np.linalg.norm(reference))
  result.update(gflop=xla_flops / 1e9, flax_vs_diffusers_rel_error=err)
  timing.add_flops(result, analytic_flops(result))

  for name in ENTRIES:
    if name in result:
      entry, ms = result[name], result[name]["median_ms"]
      entry["tflops"] = xla_flops / (ms * 1e-3) / 1e12 if xla_flops else None
      rows.append({"impl": name, "median ms": f"{ms:.2f}", "min ms": f"{entry['min_ms']:.2f}",
                   "TFLOP/s": timing.figure(entry["analytic_tflops"]),
                   "MFU": timing.percent(entry["mfu"]),
                   "flax speed-up": f"{ms / result['flax']['median_ms']:.2f}x",
                   "how": baselines.notes(entry)})
  print(f"\n{args.model} ({args.preset}) batch {batch} {args.dtype} on {result['device']}: "
        f"{timing.figure(result['analytic_gflop'])} GFLOP (analytic; XLA's cost analysis counts "
        f"{timing.figure(xla_flops / 1e9)}), Flax vs diffusers output rel. error {err:.2e}")
  print(baselines.describe(result))
  timing.print_table(rows, ["impl", "median ms", "min ms", "TFLOP/s", "MFU", "flax speed-up", "how"])
  timing.write_result(args.out or timing.result_path(f"forward_{args.model}_{args.preset}", cuda), result)
  return result


if __name__ == "__main__":
  main()
