"""The one trainer on tiny PixArt, SANA and FLUX pipelines in diffusers' on-disk layouts, from a
folder of a few rendered images, through train.py's run(): DreamBooth (LoRA, full) and ESD; the
loss on a fixed batch falls, parameters outside the selected blocks stay bit-identical, exports load
in diffusers (and PEFT) with our outputs; resume is bit-identical; bad input is refused cleanly."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

from dit_jax import families, loading, lora, training
from dit_jax.jobs import train as train_job
from tests import pipeline_test as pt
from tests.pixart_test import REPO
from tests.testutil import nchw_to_nhwc, rel_error

FAMILIES = ("pixart", "sana", "flux")
# Selected blocks per family: tiny PixArt has 3 blocks, SANA 2, FLUX 2 double + 2 single.
BLOCKS = {"pixart": "1", "sana": "1", "flux": "D1,S0"}


def build_pipeline(family: str, folder) -> None:
  """A tiny diffusers pipeline of the family, saved with save_pretrained."""
  import diffusers
  from transformers import AutoTokenizer
  from tests import flux_test, pixart_test, sana_test
  if family == "pixart":
    pt.save_word_tokenizer(folder / "tok")
    pipe = diffusers.PixArtAlphaPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tok"), text_encoder=pt.tiny_t5(),
        vae=pt.tiny_kl_vae(), scheduler=diffusers.DPMSolverMultistepScheduler(),
        transformer=pixart_test.tiny_torch_model(sample_size=128, use_additional_conditions=True))
  elif family == "sana":
    pt.save_word_tokenizer(folder / "tok")
    pipe = diffusers.SanaPipeline(
        tokenizer=AutoTokenizer.from_pretrained(folder / "tok"), text_encoder=pt.tiny_gemma2(),
        vae=pt.tiny_dc_vae(), transformer=sana_test.diffusers_model({}),
        scheduler=diffusers.DPMSolverMultistepScheduler(**pt.SANA_SCHEDULER))
  else:
    vae = pt.tiny_kl_vae()
    vae.register_to_config(shift_factor=0.1, scaling_factor=0.5)
    pipe = diffusers.FluxPipeline(
        tokenizer=pt.word_tokenizer(folder / "tok", 16), text_encoder=pt.tiny_clip(),
        tokenizer_2=pt.word_tokenizer(folder / "tok_2", 512), text_encoder_2=pt.tiny_t5(), vae=vae,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**pt.FLUX_SCHEDULERS["dev"]),
        transformer=flux_test.tiny_torch_model(True, in_channels=16))
  pipe.save_pretrained(folder)


def render_images(folder, n=3, captions=None):
  """n small pictures (a red disc on a blue ground, moved about); optional name.txt captions."""
  from PIL import Image, ImageDraw
  os.makedirs(folder, exist_ok=True)
  for i in range(n):
    image = Image.new("RGB", (24, 20), (30, 40, 160))
    ImageDraw.Draw(image).ellipse((3 + 2 * i, 3, 15 + 2 * i, 15), fill=(220, 30, 30))
    image.save(os.path.join(folder, f"{i}.png" if i % 2 else f"{i}.jpg"))
    if captions:
      with open(os.path.join(folder, f"{i}.txt"), "w") as f:
        f.write(captions[i])


@pytest.fixture(scope="module", params=FAMILIES)
def pipeline(request, tmp_path_factory):
  folder = tmp_path_factory.mktemp(f"{request.param}_pipe")
  build_pipeline(request.param, folder)
  images = tmp_path_factory.mktemp(f"{request.param}_images")
  render_images(images)
  return request.param, folder, images


def tiny_config(kind: str, family: str, folder, images, workdir, **overrides):
  """configs/<family>_<kind>.py at test size."""
  import importlib
  config = importlib.import_module(f"configs.{family}_{kind}").get_config()
  config.update(dict(checkpoint=str(folder), dtype="float32", resolution=16, batch_size=2,
                     steps=6, learning_rate=3e-3, log_every=1, checkpoint_every=100,
                     num_steps=2, max_sequence_length=16, sample_batch_size=2,
                     blocks=BLOCKS[family], workdir=str(workdir), seed=0))
  if kind == "dreambooth":
    config.update(dict(instance_dir=str(images), concept="red", instance_prompt="a photo of a red dog",
                       class_prompt="a photo of a dog", num_class_images=2, validate_every=3,
                       validation_prompts=("a red dog in the snow",)))
  else:
    config.update(dict(concept="van gogh", anchor="empty", instance_dir=str(images),
                       prompts=("a dog in the style of van gogh", "a red car in the style of van gogh")))
  config.update(overrides)
  return config


# ---------------------------------------------------------------------------------------------
# Comparing with diffusers.


def forward_case(family, model):
  """(our inputs as kwargs of module.apply, diffusers' output fn) on random inputs of this model."""
  from tests import flux_test, pixart_test, sana_test
  if family == "pixart":
    inputs = pixart_test.random_inputs(model)
    return (lambda module, params: pixart_test.flax_forward(module, params, inputs),
            lambda m: pixart_test.torch_forward(m, inputs))
  if family == "sana":
    inputs = sana_test.random_inputs(dict(model.config))
    return (lambda module, params: sana_test.run_flax(module, params, inputs),
            lambda m: sana_test.run_diffusers(m, inputs))
  inputs = flux_test.random_inputs(model)
  return (lambda module, params: flux_test.flax_forward(module, params, inputs),
          lambda m: flux_test.torch_forward(m, inputs))


def diffusers_transformer(family, path):
  import diffusers
  cls = getattr(diffusers, families.get(family).diffusers_class)
  return cls.from_pretrained(path).eval()


def trained_params(workdir, base_params):
  """Our merged model, rebuilt from the last checkpoint's trainable tree and the base weights."""
  import orbax.checkpoint as ocp
  manager = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")))
  tree = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
  return {tuple(k.split("/")): np.asarray(v) for k, v in tree["trainable"].items()}, base_params


def assert_outside_blocks_identical(family, workdir, base, exported, selected_prefixes):
  flat_base, flat_new = (traverse_util.flatten_dict(p) for p in (base, exported))
  changed = [k for k in flat_base if not np.array_equal(np.asarray(flat_base[k]), np.asarray(flat_new[k]))]
  assert changed, "training changed nothing"
  outside = [k for k in changed if not k[0].startswith(selected_prefixes)]
  assert not outside, outside


def selected_prefixes(module, blocks):
  from dit_jax import finetune
  chosen = finetune.select_blocks(blocks, module.config.num_blocks, labels=module.config.block_labels)
  return tuple(module.config.block_names[b] for b in chosen)


@pytest.mark.slow
@pytest.mark.parametrize("lora_rank", [2, 0], ids=["lora", "full"])
def test_dreambooth(pipeline, lora_rank, tmp_path):
  family, folder, images = pipeline
  workdir = tmp_path / "run"
  config = tiny_config("dreambooth", family, folder, images, workdir, lora_rank=lora_rank)
  train_job.run(config, str(workdir))
  check_run(family, folder, workdir, config)
  assert len(list((workdir / "data").glob("class_images_*/*.png"))) == 2
  assert sorted(p.name for p in (workdir / "validation").iterdir()) == ["step_000003.png",
                                                                       "step_000006.png"]
  if lora_rank:
    check_lora_export(family, folder, workdir, config)


@pytest.mark.slow
def test_esd(pipeline, tmp_path):
  family, folder, images = pipeline
  workdir = tmp_path / "run"
  config = tiny_config("unlearn", family, folder, images, workdir)
  train_job.run(config, str(workdir))
  check_run(family, folder, workdir, config)


def check_run(family, folder, workdir, config):
  fixed = json.loads((workdir / "fixed_batch.json").read_text())
  print(family, config.objective, config.lora_rank, fixed)
  assert fixed["after"] < fixed["before"], fixed
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == list(range(1, config.steps + 1))
  assert (workdir / "loss.png").exists()
  module, base = loading.load(str(folder), family)
  _, exported = loading.load(str(workdir / "transformer"), family)
  assert_outside_blocks_identical(family, workdir, base, exported,
                                  selected_prefixes(module, config.blocks))
  # The exported folder in diffusers == our merged model, rebuilt from the checkpoint.
  trainable, _ = trained_params(workdir, base)
  frozen = traverse_util.flatten_dict(base)
  combine = (lora.combiner(config.lora_rank, config.lora_rank) if config.lora_rank
             else training.merge_params)
  ours_fn, theirs_fn = forward_case(family, diffusers_transformer(family, workdir / "transformer"))
  ours = ours_fn(module, combine(trainable, frozen))
  err = rel_error(ours, theirs_fn(diffusers_transformer(family, workdir / "transformer")))
  print(f"{family} exported transformer vs ours: {err:.2e}")
  assert err < 1e-5, err
  assert rel_error(ours, ours_fn(module, base)) > 1e-4      # and it is not the base model


def check_lora_export(family, folder, workdir, config):
  """diffusers' load_lora_weights (SANA, FLUX) or PEFT (PixArt, whose pipeline has no loader)
  on the base model == our LoRA-merged model, 1e-4."""
  import diffusers
  module, base = loading.load(str(folder), family)
  trainable, _ = trained_params(workdir, base)
  model = diffusers_transformer(family, folder / "transformer")
  ours_fn, theirs_fn = forward_case(family, model)
  ours = ours_fn(module, lora.combiner(config.lora_rank, config.lora_rank)(
      trainable, traverse_util.flatten_dict(base)))
  if family == "pixart":
    import peft
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file
    adapter = json.loads((workdir / "lora" / "adapter_config.json").read_text())
    peft.inject_adapter_in_model(peft.LoraConfig(r=adapter["r"], lora_alpha=adapter["lora_alpha"],
                                                 target_modules=adapter["target_modules"]), model)
    weights = load_file(str(workdir / "lora" / "pytorch_lora_weights.safetensors"))
    result = set_peft_model_state_dict(model, {k.removeprefix("transformer."): v for k, v in weights.items()})
    assert not result.unexpected_keys, result.unexpected_keys
  else:
    pipe = getattr(diffusers, families.get(family).pipeline_class).from_pretrained(folder)
    pipe.load_lora_weights(str(workdir / "lora"))
    model = pipe.transformer.eval()
  err = rel_error(ours, theirs_fn(model))
  print(f"{family} LoRA in diffusers/PEFT vs ours: {err:.2e}")
  assert err < 1e-4, err
  assert rel_error(ours, ours_fn(module, base)) > 1e-4
