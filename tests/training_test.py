"""Training machinery: block-restricted gradients and optimizer state, resume, the pretraining CLI."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dit_jax.train import loop
from dit_jax.models.pixart import PixArtConfig, PixArtTransformer
from dit_jax import blocks as blocks_lib
from tests.pixart_test import REPO

CONFIG = PixArtConfig(num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=3,
                      num_layers=4, cross_attention_dim=16, sample_size=8, patch_size=2,
                      caption_channels=8, interpolation_scale=1, use_additional_conditions=False)


def setup(blocks):
  module = PixArtTransformer(CONFIG)
  rng = np.random.default_rng(0)
  batch = {"images": rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32),
           "caption": rng.standard_normal((4, 5, 8)).astype(np.float32),
           "caption_mask": np.ones((4, 5), np.float32)}
  params = module.init(jax.random.key(0), batch["images"], jnp.zeros((4,)), batch["caption"],
                       batch["caption_mask"])["params"]
  trainable, frozen = loop.split_params(params, blocks_lib.parameter_selector(blocks))
  apply = lambda p, x, t, b: module.apply({"params": p}, x, t, b["caption"], b["caption_mask"])
  alphas = jnp.linspace(0.999, 0.01, 100)
  loss_fn = lambda p, b, key, aux: loop.diffusion_loss(apply, p, b, key, alphas)
  optimizer = loop.make_optimizer(1e-3, 1, 20)
  return batch, params, trainable, frozen, loss_fn, optimizer


def test_flux_blocks_are_numbered_double_then_single_as_localization_ranks_them():
  from dit_jax.models.flux import FluxConfig
  config = FluxConfig(num_layers=2, num_single_layers=3)
  chosen = blocks_lib.parameter_selector([1, 2, 4], config)
  assert chosen("transformer_blocks.1/attn/to_q/kernel")
  assert chosen("single_transformer_blocks.0/proj_mlp/kernel")
  assert chosen("single_transformer_blocks.2/proj_out/bias")
  assert not chosen("transformer_blocks.0/attn/to_q/kernel")
  assert not chosen("single_transformer_blocks.1/proj_out/bias")
  assert not chosen("transformer_blocks.2/attn/to_q/kernel")     # there are only 2 double blocks
  with pytest.raises(ValueError, match=r"blocks \[5\] do not exist: the model has 5"):
    blocks_lib.parameter_selector([0, 5], config)


@pytest.mark.slow
def test_only_selected_blocks_train_and_hold_optimizer_state():
  batch, params, trainable, frozen, loss_fn, optimizer = setup([1, 3])
  params = jax.tree_util.tree_map(np.array, params)   # the step donates the trainable buffers
  assert trainable and all(k[0] in ("transformer_blocks.1", "transformer_blocks.3") for k in trainable)
  state = loop.init_state(trainable, optimizer, seed=0, ema=False)
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  # Adam keeps two moments per trainable parameter and nothing for frozen ones.
  assert count(state.opt_state) - 1 <= 2 * count(trainable) + 2
  assert count(trainable) < count(params) / 2
  step = loop.make_train_step(loss_fn, optimizer, frozen)
  losses = []
  for _ in range(15):
    state, loss = step(state, batch)
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < np.mean(losses[:5])
  final = loop.merge_params(state.trainable, frozen)
  flat_before, flat_after = (jax.tree_util.tree_leaves_with_path(t) for t in (params, final))
  for (path, before), (_, after) in zip(flat_before, flat_after):
    block = str(path[0].key)
    changed = not np.array_equal(np.asarray(before), np.asarray(after))
    assert changed == (block in ("transformer_blocks.1", "transformer_blocks.3")), block


@pytest.mark.slow
def test_memory_plan_of_a_localized_step_is_smaller_by_the_frozen_optimizer_state():
  plans = {}
  for name, blocks in (("full", None), ("one block", [2])):
    batch, params, trainable, frozen, loss_fn, optimizer = setup(blocks)
    state = loop.init_state(trainable, optimizer, seed=0, ema=False)
    plans[name] = loop.make_train_step(loss_fn, optimizer, frozen).memory(state, batch)
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  frozen_bytes = 4 * count(frozen)     # of the one-block run: what full training also trains
  # Same weights and batch as arguments; full training adds two float32 Adam moments per parameter.
  assert plans["full"]["arguments"] - plans["one block"]["arguments"] == pytest.approx(
      2 * frozen_bytes, rel=0.01)
  assert plans["one block"]["peak"] < plans["full"]["peak"] - 2 * frozen_bytes
  assert all(v > 0 for plan in plans.values() for v in plan.values())
  for plan in plans.values():   # the peak holds the arguments and the temporaries at once
    assert plan["peak"] >= plan["arguments"] + plan["temporaries"]


@pytest.mark.slow
def test_resume_gives_the_same_parameters(tmp_path):
  batch, _, trainable, frozen, loss_fn, optimizer = setup(None)
  step = loop.make_train_step(loss_fn, optimizer, frozen, ema_decay=0.9)
  fresh = lambda: loop.init_state(jax.tree_util.tree_map(jnp.copy, trainable), optimizer, 0, ema=True)

  straight = fresh()
  for _ in range(6):
    straight, _ = step(straight, batch)

  interrupted = fresh()
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  for _ in range(3):
    interrupted, _ = step(interrupted, batch)
  checkpoints.save(interrupted)
  del interrupted                                   # the run is killed here
  resumed = loop.Checkpoints(str(tmp_path / "ckpt")).restore_latest(fresh())
  assert int(resumed.step) == 3
  for _ in range(3):
    resumed, _ = step(resumed, batch)
  for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_pretrain_cli_runs_resumes_and_exports(tmp_path):
  from diffusers import PixArtTransformer2DModel
  args = [sys.executable, "train.py", "--config", "configs/shapes_pretrain.py",
          f"--config.workdir={tmp_path / 'run'}", f"--config.export_dir={tmp_path / 'export'}",
          "--config.num_images=16", "--config.batch_size=4", "--config.log_every=1",
          "--config.checkpoint_every=2", "--config.transformer.num_layers=2"]
  first = subprocess.run(args + ["--config.steps=2"], cwd=REPO, capture_output=True, text=True)
  assert first.returncode == 0, first.stderr[-3000:]
  second = subprocess.run(args + ["--config.steps=4"], cwd=REPO, capture_output=True, text=True)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resumed from step 2" in second.stdout
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  assert os.path.exists(tmp_path / "run" / "loss.png")
  model = PixArtTransformer2DModel.from_pretrained(tmp_path / "export")
  assert model.config.num_layers == 2 and model.config.in_channels == 3


@pytest.mark.slow
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  batch, _, trainable, frozen, loss_fn, optimizer = setup([0])
  step = loop.make_train_step(loss_fn, optimizer, frozen)
  state = loop.init_state(trainable, optimizer, seed=0, ema=False)
  poisoned = {**batch, "images": np.full_like(batch["images"], np.nan)}
  draw = lambda i: poisoned if i == 4 else batch                    # the 5th step goes bad
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  with pytest.raises(loop.NonFiniteLoss, match=r"loss became nan at step 5.*step 4"):
    loop.fit(step, state, draw, steps=10, workdir=str(tmp_path), checkpoints=checkpoints,
                 log_every=1, checkpoint_every=2)
  assert checkpoints.latest_step() == 4
  restored = checkpoints.restore_latest(loop.init_state(trainable, optimizer, 0, ema=False))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(restored.trainable))
  records = loop.MetricsLog(str(tmp_path / "metrics.jsonl")).records()
  assert [r["step"] for r in records] == [1, 2, 3, 4]


def test_parameter_selector_can_take_parts_of_blocks():
  """Issue 19, item 7: planting through the feed-forward only (weights the score does not read)."""
  from dit_jax.models.pixart import PixArtConfig
  config = PixArtConfig(num_layers=3)
  chosen = blocks_lib.parameter_selector([1], config, parts=("ff",))
  assert chosen("transformer_blocks.1/ff/net.0.proj/kernel")
  assert not chosen("transformer_blocks.1/attn2/to_k/kernel")
  assert not chosen("transformer_blocks.0/ff/net.0.proj/kernel")
  assert blocks_lib.parameter_selector([1], config)("transformer_blocks.1/attn2/to_k/kernel")


def test_min_snr_weighting_by_hand():
  """Min-SNR-5 (Hang et al. 2023): min(SNR, 5) / SNR for epsilon, min(SNR, 5) / (SNR + 1) for v."""
  import jax
  import numpy as np
  from dit_jax.diffusion.noising import Noising
  alphas = np.array([0.2, 0.5, 0.9, 0.99], np.float32)       # SNR 0.25, 1, 9, 99
  for target, expected in (("epsilon", [1, 1, 5 / 9, 5 / 99]),
                           ("v_prediction", [0.25 / 1.25, 0.5, 0.5, 5 / 100])):
    noising = Noising("ddpm", target, alphas, "min_snr")
    np.testing.assert_allclose(noising._ddpm_weight(alphas), expected, rtol=1e-5)
    _, t, _, weight = noising.sample(jax.random.key(0), np.zeros((8, 4, 4, 3), np.float32))
    np.testing.assert_allclose(weight, np.asarray(expected, np.float32)[np.asarray(t, int)], rtol=1e-5)
  import pytest
  with pytest.raises(ValueError, match="DDPM, which takes one of"):
    Noising.from_scheduler_config({"prediction_type": "epsilon"}, "logit_normal")


def test_recipe_variants_change_one_thing_each(tmp_path):
  """dit_jax.shapes.recipe: each ablation row differs from the baseline in its own keys only, and
  trains in a pipeline folder of its own (the shipped assets are never written)."""
  from dit_jax.shapes import ASSETS, recipe
  base, _, _ = recipe.variant_config("baseline", 10, str(tmp_path))
  flat = lambda c: {k: v for k, v in c.to_dict().items() if k not in ("workdir", "checkpoint",
                                                                      "export_dir")}
  for name, (_, overrides) in recipe.VARIANTS.items():
    config, workdir, folder = recipe.variant_config(name, 10, str(tmp_path))
    assert str(ASSETS) not in config.checkpoint + config.export_dir
    changed = {k for k in flat(config) if flat(config)[k] != flat(base)[k]}
    assert changed == {k.split(".")[0] for k in overrides}, name


def _tiny_pretrain(config, tmp_path, steps):
  config.update(dict(num_images=16, batch_size=4, log_every=1, checkpoint_every=2, steps=steps,
                     memory_plan=False, fixed_batch_loss=False, workdir=str(tmp_path / "run")))
  return config


@pytest.mark.slow
def test_a_run_continued_from_a_folder_resumes_and_exports_any_checkpoint(tmp_path):
  """configs/shapes_continue.py trains on from a pipeline folder's weights. Its data source writes
  the folder's scheduler and model_index; rewriting them unchanged used to change the folder's
  fingerprint, so the resumed run was refused as "another run". train.py --export_checkpoint
  exports a checkpoint of a run that is still training: at the last step it is the finished run's
  own export, bit for bit."""
  import shutil
  from safetensors.numpy import load_file
  from dit_jax.train import job as train_job
  from dit_jax.shapes import ASSETS
  from dit_jax.shapes.tasks import continue_config, pretrain_config

  scratch = _tiny_pretrain(pretrain_config(), tmp_path / "scratch", 1)
  scratch.transformer.num_layers = 2
  scratch.export_dir = str(tmp_path / "base" / "transformer")
  train_job.run(scratch, scratch.workdir)
  for part in ("tokenizer", "text_encoder", "scheduler", "model_index.json"):
    copy = shutil.copytree if (ASSETS / part).is_dir() else shutil.copy
    copy(ASSETS / part, tmp_path / "base" / part)

  config = _tiny_pretrain(continue_config(), tmp_path, 2)
  config.checkpoint = str(tmp_path / "base")
  config.export_dir = str(tmp_path / "final")
  train_job.run(config, config.workdir)
  config.steps = 4                                   # resumed with a stretched schedule
  train_job.run(config, config.workdir)
  records = loop.MetricsLog(str(tmp_path / "run" / "metrics.jsonl")).records()
  assert [r["step"] for r in records] == [1, 2, 3, 4]

  weights = lambda d: load_file(str(d / "diffusion_pytorch_model.safetensors"))
  config.export_dir = str(tmp_path / "latest")
  assert train_job.export_checkpoint(config, config.workdir) == 4
  final, latest = weights(tmp_path / "final"), weights(tmp_path / "latest")
  assert final.keys() == latest.keys()
  for name in final:
    np.testing.assert_array_equal(final[name], latest[name], err_msg=name)
  config.export_dir = str(tmp_path / "step2")
  assert train_job.export_checkpoint(config, config.workdir, 2) == 2
  assert any(not np.array_equal(final[n], v) for n, v in weights(tmp_path / "step2").items())

  with pytest.raises(SystemExit, match=r"no checkpoint at step 3 .*\[2, 4\]"):
    train_job.export_checkpoint(config, config.workdir, 3)
  config.batch_size = 8
  with pytest.raises(SystemExit, match="other inputs: batch_size"):
    train_job.export_checkpoint(config, config.workdir)
