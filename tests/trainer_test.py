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

from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.train import lora, loop
from dit_jax.train import job as train_job
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
  from tests import flux_test, pixart_test, sana_test, sd3_test
  if family == "pixart":
    inputs = pixart_test.random_inputs(model)
    return (lambda module, params: pixart_test.flax_forward(module, params, inputs),
            lambda m: pixart_test.torch_forward(m, inputs))
  if family == "sana":
    inputs = sana_test.random_inputs(dict(model.config))
    return (lambda module, params: sana_test.run_flax(module, params, inputs),
            lambda m: sana_test.run_diffusers(m, inputs))
  if family == "sd3":
    inputs = sd3_test.random_inputs(model)
    return (lambda module, params: sd3_test.flax_forward(module, params, inputs),
            lambda m: sd3_test.torch_forward(m, inputs))
  inputs = flux_test.random_inputs(model)
  return (lambda module, params: flux_test.flax_forward(module, params, inputs),
          lambda m: flux_test.torch_forward(m, inputs))


def tiny_transformer(family):
  """A tiny diffusers transformer of the family, random weights (forward_case's inputs fit it)."""
  from tests import flux_test, pixart_test, sana_test, sd3_test
  return {"pixart": lambda: pixart_test.tiny_torch_model(sample_size=8, use_additional_conditions=False),
          "sana": lambda: sana_test.diffusers_model({}),
          "flux": lambda: flux_test.tiny_torch_model(True),
          "sd3": lambda: sd3_test.tiny_torch_model()}[family]()


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
  from dit_jax import blocks as blocks_lib
  chosen = blocks_lib.select_blocks(blocks, module.config.num_blocks, labels=module.config.block_labels)
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
             else loop.merge_params)
  ours_fn, theirs_fn = forward_case(family, diffusers_transformer(family, workdir / "transformer"))
  ours = ours_fn(module, combine(trainable, frozen))
  err = rel_error(ours, theirs_fn(diffusers_transformer(family, workdir / "transformer")))
  print(f"{family} exported transformer vs ours: {err:.2e}")
  assert err < 1e-5, err
  assert rel_error(ours, ours_fn(module, base)) > 1e-4      # and it is not the base model


def check_lora_export(family, folder, workdir, config):
  """The export, through each public loader the family has (lora_test.public_loads), on the base
  model == our LoRA-merged model, 1e-4."""
  from tests.lora_test import public_loads
  module, base = loading.load(str(folder), family)
  trainable, _ = trained_params(workdir, base)
  ours_fn, theirs_fn = forward_case(family, diffusers_transformer(family, folder / "transformer"))
  ours = ours_fn(module, lora.combiner(config.lora_rank, config.lora_rank)(
      trainable, traverse_util.flatten_dict(base)))
  loaded = public_loads(family, lambda: diffusers_transformer(family, folder / "transformer"),
                        workdir / "lora")
  for loader, model in loaded.items():
    err = rel_error(ours, theirs_fn(model))
    print(f"{family} LoRA through {loader} vs ours: {err:.2e}")
    assert err < 1e-4, (loader, err)
  assert rel_error(ours, ours_fn(module, base)) > 1e-4


# ---------------------------------------------------------------------------------------------
# Resume, several devices, bad input.


def final_state(workdir):
  trainable, _ = trained_params(workdir, None)
  return trainable


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["pixart"], indirect=True)
def test_kill_and_resume_is_bit_identical(pipeline, tmp_path, monkeypatch):
  family, folder, images = pipeline
  make = lambda workdir: tiny_config("dreambooth", family, folder, images, workdir, steps=4,
                                     checkpoint_every=2, validate_every=0, memory_plan=False)
  straight = tmp_path / "straight"
  train_job.run(make(straight), str(straight))

  interrupted = tmp_path / "interrupted"
  save = loop.Checkpoints.save

  def killed_after_step_2(self, state):
    save(self, state)
    if int(state.step) == 2:
      raise KeyboardInterrupt("killed")
  monkeypatch.setattr(loop.Checkpoints, "save", killed_after_step_2)
  with pytest.raises(SystemExit) as stopped:   # Ctrl-C: the loop saves, says how to resume, exits 130
    train_job.run(make(interrupted), str(interrupted))
  assert stopped.value.code == 130
  assert not (interrupted / "transformer").exists()
  monkeypatch.setattr(loop.Checkpoints, "save", save)
  train_job.run(make(interrupted), str(interrupted))

  a, b = final_state(straight), final_state(interrupted)
  assert set(a) == set(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))
  _, exported_a = loading.load(str(straight / "transformer"), family)
  _, exported_b = loading.load(str(interrupted / "transformer"), family)
  for x, y in zip(jax.tree_util.tree_leaves(exported_a), jax.tree_util.tree_leaves(exported_b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["flux"], indirect=True)
def test_eight_device_fsdp_flux_matches_one_device(pipeline, tmp_path):
  _, folder, images = pipeline
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-m", "tests.trainer_test", str(folder), str(images),
                        str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "OK" in run.stdout, run.stdout


def fsdp_main(folder, images, out):
  """In a process with 8 CPU devices: one device, then a 2 x 4 (data, fsdp) mesh."""
  import pathlib
  assert jax.device_count() == 8, jax.devices()
  out = pathlib.Path(out)
  results = {}
  for name, devices, fsdp in (("one", 1, 1), ("mesh", 8, 4)):
    workdir = out / name
    config = tiny_config("dreambooth", "flux", folder, images, workdir, batch_size=8, steps=3,
                         num_devices=devices, fsdp=fsdp, validate_every=0, memory_plan=False)
    train_job.run(config, str(workdir))
    losses = [json.loads(l)["loss"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    _, params = loading.load(str(workdir / "transformer"), "flux")
    results[name] = losses, traverse_util.flatten_dict(jax.device_get(params))
  (one_losses, one), (mesh_losses, mesh) = results["one"], results["mesh"]
  np.testing.assert_allclose(mesh_losses, one_losses, rtol=1e-5)
  for key in one:
    a, b = np.asarray(one[key]), np.asarray(mesh[key])
    err = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
    assert err < 1e-5, (key, err)
  print(f"losses {mesh_losses} match one device's {one_losses}")
  print("OK")


BAD_INPUTS = {
    "missing folder": (dict(instance_dir="{tmp}/nowhere"), "does not exist"),
    "empty folder": (dict(instance_dir="{tmp}/empty"), "holds no image"),
    "unreadable image": (dict(instance_dir="{tmp}/broken"), r"bad\.png is not a readable image"),
    "prompt without the concept": (dict(instance_prompt="a photo of a dog"),
                                   "does not contain the concept 'red'"),
    "caption file without the concept": (dict(instance_dir="{tmp}/captioned"),
                                         "'a blue car' does not contain the concept 'red'"),
    "blocks outside the model": (dict(blocks="1,7"), r"not a non-empty subset of 0\.\.3"),
    "unknown block label": (dict(blocks="D1,S5"), "'S5' is not a block of this model"),
    "LoRA without projections": (dict(blocks="S0,S1", lora_rank=2, lora_targets="attn/to_add_out"),
                                 "nothing for LoRA to adapt"),
}


@pytest.mark.parametrize("pipeline", ["flux"], indirect=True)
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_before_any_output(pipeline, case, tmp_path):
  _, folder, images = pipeline
  (tmp_path / "empty").mkdir()
  render_images(tmp_path / "broken", n=2)
  (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
  render_images(tmp_path / "captioned", n=2, captions=["a red dog", "a blue car"])
  overrides, message = BAD_INPUTS[case]
  overrides = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in overrides.items()}
  workdir = tmp_path / "run"
  config = tiny_config("dreambooth", "flux", folder, images, workdir, **overrides)
  with pytest.raises((ValueError, FileNotFoundError), match=message):
    train_job.run(config, str(workdir))
  left = sorted(p.name for p in workdir.iterdir()) if workdir.exists() else []
  assert not set(left) & {"transformer", "lora", "checkpoints", "selection.json", "metrics.jsonl",
                          "inputs.json", "fixed_batch.json"}, left
  # The corrected rerun is not refused as another run's workdir.
  from dit_jax import provenance
  assert not (workdir / provenance.RECORD).exists()


def test_flux_blocks_by_label_index_or_scores(tmp_path):
  from dit_jax import blocks as blocks_lib
  from dit_jax.models.flux import FluxConfig
  config = FluxConfig(num_layers=3, num_single_layers=4)
  select = lambda spec, **kw: blocks_lib.select_blocks(spec, config.num_blocks, labels=config.block_labels, **kw)
  assert select("D2,S0") == [2, 3] == select("2,3") == select("d2, s0")
  assert select("all") is None
  scores = tmp_path / "scores.json"
  scores.write_text(json.dumps({"a dog": {"with_wo": [0, 9, 0, 0, 5, 0, 8],
                                          "without_wo": [7, 0, 0, 0, 0, 9, 0]}}))
  assert select(str(scores), concept="a dog", k=2) == [1, 6]
  assert select(str(scores), concept="a dog", k=2, variant="without_wo") == [0, 5]
  with pytest.raises(ValueError, match="'S4' is not a block of this model"):
    select("D0,S4")


@pytest.mark.parametrize("family", FAMILIES)
def test_remat_changes_memory_not_results(family):
  """jax.checkpoint per block: the same parameters, outputs and gradients."""
  model = tiny_transformer(family)
  fam = families.get(family)
  config = fam.config_cls.from_diffusers(dict(model.config))
  plain = fam.module_cls(config=config)
  params = plain.init(jax.random.key(0), *fam.example_inputs(config))["params"]
  remat = plain.clone(remat=True)
  args = fam.example_inputs(config)
  loss = lambda module: lambda p: (module.apply({"params": p}, *args) ** 2).sum()
  assert jax.tree_util.tree_structure(remat.init(jax.random.key(0), *args)["params"]) == \
      jax.tree_util.tree_structure(params)
  traced = lambda module: str(jax.make_jaxpr(loss(module))(params))
  assert traced(remat).count("remat2[") == config.num_blocks and "remat2[" not in traced(plain)
  for a, b in zip(jax.tree_util.tree_leaves(jax.grad(loss(plain))(params)),
                  jax.tree_util.tree_leaves(jax.grad(loss(remat))(params))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


if __name__ == "__main__":
  fsdp_main(*sys.argv[1:4])
