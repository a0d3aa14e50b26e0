"""Mixed precision in fine-tuning (issue 28): float32 master weights for what trains, compute in
config.dtype, and an export that changes only the trained blocks: every other tensor is the input
checkpoint's, bit for bit and in its own dtype, whatever the compute dtype.

Tiny transformers of every family are saved with diffusers' save_pretrained (float32, or bf16 as
published FLUX and SD3 weights are); the references are those safetensors files read with
safetensors/torch, and the trained tensors are named here by their diffusers keys, not asked of
dit_jax. Runs go through the trainer's entry points (train.py's run and --export_checkpoint) on
random latents and text states of the model's shapes, so no text encoder or VAE is needed."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from safetensors.torch import load_file

from dit_jax.train import data as data_lib, trainer, loop
from dit_jax.pipeline import loading
from dit_jax.train import job as train_job
from dit_jax.train.defaults import train_config

WEIGHTS = "diffusion_pytorch_model.safetensors"
FAMILIES = ("pixart", "sana", "flux", "sd3")
# The families the trainer runs (SD3's network has no remat switch, and no training config yet);
# the export is the one mechanism for all four.
TRAINED_FAMILIES = ("pixart", "sana", "flux")
# The blocks that train, and the diffusers key prefixes of their tensors.
BLOCKS = {"pixart": ("1", ("transformer_blocks.1.",)),
          "sana": ("1", ("transformer_blocks.1.",)),
          "flux": ("D1,S0", ("transformer_blocks.1.", "single_transformer_blocks.0.")),
          "sd3": ("1", ("transformer_blocks.1.",))}
FLOW = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
SCHEDULERS = {"pixart": {"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "epsilon"},
              "sana": FLOW, "flux": {**FLOW, "use_dynamic_shifting": True}, "sd3": FLOW}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# An update far below half a bf16 ulp of the weights (2^-9 relative: 1e-3 at 0.5), far above a
# float32 one (6e-8 at 0.5).
BELOW_BF16 = 2.0 ** -20


def tiny_model(family: str):
  from tests import flux_test, pixart_test, sana_test, sd3_test
  return {"pixart": lambda: pixart_test.tiny_torch_model(sample_size=8, use_additional_conditions=False),
          "sana": lambda: sana_test.diffusers_model({}),
          "flux": lambda: flux_test.tiny_torch_model(True),
          "sd3": lambda: sd3_test.tiny_torch_model()}[family]()


def save_checkpoint(family: str, folder, stored: str = "float32"):
  """A pipeline folder holding what training reads: transformer/ (save_pretrained, in `stored`)
  and scheduler/scheduler_config.json."""
  tiny_model(family).to(TORCH_DTYPES[stored]).save_pretrained(folder / "transformer")
  (folder / "scheduler").mkdir(parents=True)
  (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULERS[family]))
  return folder


class RandomBatches:
  """Random latents and text states of the model's shapes."""

  def __init__(self, config, latent_patch: int):
    self.config, self.latent_patch = config, latent_patch

  def draw(self, rng: np.random.Generator, batch_size: int) -> dict:
    config, normal = self.config, lambda *shape: rng.standard_normal(shape).astype(np.float32)
    text_width = getattr(config, "caption_channels", None) or config.joint_attention_dim
    cond = {"caption": normal(batch_size, 3, text_width)}
    if hasattr(config, "pooled_projection_dim"):
      cond["pooled"] = normal(batch_size, config.pooled_projection_dim)
    channels = config.in_channels // self.latent_patch ** 2
    return {"x0": normal(batch_size, 4, 4, channels), "cond": cond}


@data_lib.register_source("precision_test_random")
def random_source(ctx, objective):
  return RandomBatches(ctx.module.config, ctx.family.latent_patch)


def run_config(family: str, folder, workdir, **overrides):
  config = train_config(family, "diffusion", resolution=32, num_steps=2, guidance_scale=3.5)
  config.update(dict(checkpoint=str(folder), data="precision_test_random", blocks=BLOCKS[family][0],
                     batch_size=1, steps=2, learning_rate=1e-6, weight_decay=0.0, log_every=1,
                     checkpoint_every=100, memory_plan=False, fixed_batch_loss=False,
                     workdir=str(workdir)))
  config.update(overrides)
  return config


def read(folder) -> dict[str, torch.Tensor]:
  return load_file(str(folder / WEIGHTS))


def trained(family: str, key: str) -> bool:
  return key.startswith(BLOCKS[family][1])


def assert_untrained_bit_identical(family: str, stored: dict, exported: dict) -> None:
  """The same keys; every tensor outside the trained blocks the stored one: dtype and bits."""
  assert sorted(exported) == sorted(stored)
  assert any(trained(family, k) for k in stored)
  for key in (k for k in stored if not trained(family, k)):
    assert exported[key].dtype == stored[key].dtype, (key, exported[key].dtype, stored[key].dtype)
    assert torch.equal(exported[key], stored[key]), key


def write_run_checkpoint(family: str, folder, workdir, update: float) -> None:
  """A checkpoint as a run writes it at step 1: float32 masters of the trained blocks, here the
  stored weights plus `update`."""
  _, params = loading.load(str(folder), family)
  selected = lambda name: name.startswith(tuple(p.rstrip(".") + "/" for p in BLOCKS[family][1]))
  masters = {k: jnp.asarray(np.asarray(v, np.float32) + np.float32(update))
             for k, v in traverse_util.flatten_dict(params).items() if selected("/".join(k))}
  state = loop.init_state(masters, loop.make_optimizer(1e-4, 0, 10), 0, ema=False)
  loop.Checkpoints(str(workdir / "checkpoints")).save(state._replace(step=jnp.ones((), jnp.int32)))


@pytest.fixture(scope="module")
def stored_folder(tmp_path_factory):
  """The pipeline folder of a family in a stored dtype, saved once for the module: every test
  only reads it (runs and exports write to their own workdirs)."""
  made = {}

  def make(family: str, stored: str = "float32"):
    if (family, stored) not in made:
      root = tmp_path_factory.mktemp(f"{family}_{stored}")
      made[family, stored] = save_checkpoint(family, root / "pipe", stored)
    return made[family, stored]

  return make


@pytest.fixture(scope="module")
def stored_run(stored_folder, tmp_path_factory):
  """(pipeline folder, workdir with a step-1 checkpoint) of a family in a stored dtype, made once
  for every compute dtype."""
  made = {}

  def make(family: str, stored: str):
    if (family, stored) not in made:
      folder = stored_folder(family, stored)
      workdir = tmp_path_factory.mktemp(f"{family}_{stored}_run")
      write_run_checkpoint(family, folder, workdir, BELOW_BF16)
      made[family, stored] = folder, workdir
    return made[family, stored]

  return make


# ---------------------------------------------------------------------------------------------
# The export: the checkpoint's tensors, with the trained blocks' masters written over them.


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stored, compute", [("float32", "float32"), ("float32", "bfloat16"),
                                             ("bfloat16", "float32"), ("bfloat16", "bfloat16")])
def test_full_export_changes_only_the_trained_blocks(family, stored, compute, stored_run, tmp_path):
  """train.py --export_checkpoint of a step whose masters took an update below bf16 resolution."""
  folder, workdir = stored_run(family, stored)
  export_dir = tmp_path / "export"
  config = run_config(family, folder, workdir, dtype=compute, export_dir=str(export_dir))
  assert trainer.export_checkpoint(config, str(workdir)) == 1

  before, after = read(folder / "transformer"), read(export_dir)
  assert_untrained_bit_identical(family, before, after)
  for key in (k for k in before if trained(family, k)):
    # The float32 master, rounded once to the stored dtype: in float32 the update survives.
    expected = (before[key].float() + BELOW_BF16).to(before[key].dtype)
    assert torch.equal(after[key], expected), key
    if stored == "float32":
      assert not torch.equal(after[key], before[key]), key


# ---------------------------------------------------------------------------------------------
# Training: masters start from the stored bits and take updates a bf16 weight could not hold.


@pytest.mark.slow   # compiles a train step per family
@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_an_update_below_bf16_resolution_survives_a_step(family, stored_folder, tmp_path):
  """bf16 compute, float32 weights, two steps at learning rate 1e-6 (the first is warm-up's zero):
  Adam moves each trained weight by about the learning rate, 1000x less than the bf16 rounding of
  a 0.5 weight. The export holds that update on the exact stored weights; nothing outside the
  trained blocks moves."""
  folder = stored_folder(family)
  workdir = tmp_path / "run"
  config = run_config(family, folder, workdir, dtype="bfloat16")
  train_job.run(config, str(workdir))

  before, after = read(folder / "transformer"), read(workdir / "transformer")
  moved = total = 0
  for key in (k for k in before if trained(family, k)):
    assert after[key].dtype == torch.float32, key
    change = (after[key].double() - before[key].double()).abs()
    assert float(change.max()) < 10 * config.learning_rate, (key, float(change.max()))
    moved, total = moved + int((change > 0).sum()), total + change.numel()
  assert moved > total / 2, (moved, total)
  assert_untrained_bit_identical(family, before, after)


@pytest.mark.slow   # compiles a LoRA train step per family
@pytest.mark.parametrize("family", TRAINED_FAMILIES)
def test_lora_export_merges_into_the_stored_kernels(family, stored_folder, tmp_path):
  """bf16 compute: the full export of a LoRA run is the stored kernel + (alpha / r) B A of the
  PEFT file it writes beside it, in float32 (not a bf16-rounded base); every other tensor is the
  stored one."""
  folder = stored_folder(family)
  workdir = tmp_path / "run"
  config = run_config(family, folder, workdir, dtype="bfloat16", lora_rank=2, learning_rate=1e-2)
  train_job.run(config, str(workdir))

  before, after = read(folder / "transformer"), read(workdir / "transformer")
  factors = load_file(str(workdir / "lora" / "pytorch_lora_weights.safetensors"))
  kernels = {k.removeprefix("transformer.").removesuffix(".lora_A.weight") + ".weight"
             for k in factors if k.endswith(".lora_A.weight")}
  assert kernels and all(trained(family, k) for k in kernels)
  assert sorted(after) == sorted(before)
  for key in before:
    if key not in kernels:   # what LoRA does not adapt, in the trained blocks too
      assert after[key].dtype == before[key].dtype and torch.equal(after[key], before[key]), key
      continue
    module = "transformer." + key.removesuffix(".weight")
    delta = factors[module + ".lora_B.weight"] @ factors[module + ".lora_A.weight"]  # alpha = r
    assert float(delta.abs().max()) > 1e-4, key          # the factors trained
    np.testing.assert_allclose(after[key].numpy(), (before[key] + delta).numpy(), rtol=0, atol=1e-6,
                               err_msg=key)


# ---------------------------------------------------------------------------------------------
# As a user would: train.py on a pipeline folder, the image-folder data and the default dtype.


@pytest.mark.slow   # builds a pipeline (text encoders, VAE) and generates class images
def test_dreambooth_export_is_the_input_outside_the_selected_blocks(tmp_path):
  """The issue's run: a float32 FLUX pipeline, full weights of blocks 1 and 3 (D1, S1), bf16
  compute (the configs' default), 4 steps; only those blocks' tensors differ from the input's."""
  from tests import trainer_test
  folder, images, workdir = tmp_path / "pipe", tmp_path / "images", tmp_path / "run"
  trainer_test.build_pipeline("flux", folder)
  trainer_test.render_images(images)
  config = trainer_test.tiny_config("dreambooth", "flux", folder, images, workdir, lora_rank=0,
                                    blocks="1,3", steps=4, dtype="bfloat16", validate_every=0,
                                    num_class_images=1, memory_plan=False)
  train_job.run(config, str(workdir))
  before, after = read(folder / "transformer"), read(workdir / "transformer")
  names = ("transformer_blocks.1.", "single_transformer_blocks.1.")
  assert sorted(after) == sorted(before)
  changed = [k for k in before
             if not (after[k].dtype == before[k].dtype and torch.equal(after[k], before[k]))]
  outside = [k for k in changed if not k.startswith(names)]
  assert changed and not outside, outside
