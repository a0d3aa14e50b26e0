"""Localized fine-tuning: block selection, the unlearning and personalization objectives, the CLI."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from dit_jax import blocks
from dit_jax.diffusion.noising import Noising
from dit_jax.train.objectives import personalization, unlearning
from dit_jax.models.pixart import PixArtTransformer
from tests.pixart_test import REPO
from tests.training_test import CONFIG, setup


def test_select_blocks(tmp_path):
  assert blocks.select_blocks("all", 12) is None
  assert blocks.select_blocks("9, 2,5", 12) == [2, 5, 9]
  scores = tmp_path / "scores.json"
  scores.write_text(json.dumps({"zork": {"category": "character", "with_wo": [0, 5, 1, 9, 3],
                                         "without_wo": [9, 0, 0, 0, 0]}}))
  assert blocks.select_blocks(str(scores), 5, concept="zork", k=2) == [1, 3]
  assert blocks.select_blocks(str(scores), 5, concept="zork", k=1, variant="without_wo") == [0]
  with pytest.raises(ValueError, match="not a non-empty subset of 0..11"):
    blocks.select_blocks("3,12", 12)
  with pytest.raises(ValueError, match="use 'all'"):
    blocks.select_blocks("top", 12)
  with pytest.raises(KeyError, match="no scores for 'blip'"):
    blocks.select_blocks(str(scores), 5, concept="blip", k=2)
  with pytest.raises(FileNotFoundError, match="run localize.py first"):
    blocks.select_blocks(str(tmp_path / "missing.json"), 5, concept="zork", k=2)


def _objective_setup():
  batch, params, trainable, frozen, _, _ = setup([1])
  module = PixArtTransformer(CONFIG)
  model = lambda p, x, t, cond: module.apply({"params": p}, x, t, cond["caption"], cond["caption_mask"])
  alphas = np.linspace(0.999, 0.01, 100).astype(np.float32)
  tree = {"x0": batch["images"], "cond": {"caption": batch["caption"], "caption_mask": batch["caption_mask"]}}
  return tree, params, trainable, model, alphas


@pytest.mark.slow
def test_unlearning_targets():
  batch, params, trainable, model, alphas = _objective_setup()
  noising = Noising("ddpm", "epsilon", alphas)
  key = jax.random.key(3)
  teacher = jax.tree_util.tree_map(np.asarray, trainable)
  # Before any update the student is the teacher: with the anchor = the concept caption, the target
  # is the student's own prediction (ablation), and ESD's guidance term vanishes.
  same = {**batch, "anchor": {"cond": batch["cond"]}}
  for guidance in (0.0, 1.0):
    loss = unlearning.unlearning_loss(model, noising, guidance)(params, same, key, teacher)
    assert float(loss) < 1e-10
  # A different anchor gives a real target; ESD pushes further than ablation.
  reversed_cond = jax.tree_util.tree_map(lambda x: x[::-1], batch["cond"])
  other = {**same, "anchor": {"cond": reversed_cond}}
  ablation = float(unlearning.unlearning_loss(model, noising, 0.0)(params, other, key, teacher))
  esd = float(unlearning.unlearning_loss(model, noising, 1.0)(params, other, key, teacher))
  assert 0 < ablation < esd


@pytest.mark.slow
def test_personalization_adds_the_prior_term():
  batch, params, _, model, alphas = _objective_setup()
  noising = Noising("ddpm", "v_prediction", alphas)
  key = jax.random.key(4)
  with_prior = {**batch, "prior": {"x0": batch["x0"][::-1], "cond": batch["cond"]}}
  full = personalization.personalization_loss(model, noising, prior_weight=1.0)
  none = personalization.personalization_loss(model, noising, prior_weight=0.0)
  a, b = float(full(params, with_prior, key, None)), float(none(params, with_prior, key, None))
  assert a > b > 0


@pytest.mark.slow   # compiles the Shapes model's train step
def test_localized_lora_unlearning_cli_exports_both_layouts(tmp_path):
  from diffusers import PixArtTransformer2DModel
  scores = tmp_path / "scores.json"
  scores.write_text(json.dumps({"zork": {"category": "character", "with_wo": list(range(12)),
                                         "without_wo": list(range(12))}}))
  run = subprocess.run(
      [sys.executable, "train.py", "--config", "configs/shapes_unlearn.py",
       f"--config.workdir={tmp_path / 'run'}", f"--config.blocks={scores}", "--config.k=2",
       "--config.lora_rank=2", "--config.steps=2", "--config.batch_size=2", "--config.num_images=4",
       "--config.log_every=1"], cwd=REPO, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-3000:]
  selection = json.loads((tmp_path / "run" / "selection.json").read_text())
  assert selection["blocks"] == [10, 11] and selection["lora_rank"] == 2
  assert selection["trainable_parameters"] < selection["total_parameters"] / 50
  assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").exists()
  model = PixArtTransformer2DModel.from_pretrained(tmp_path / "run" / "transformer")
  assert model.config.num_layers == 12


def test_preservation_captions_leave_out_the_fine_tuned_concept():
  import re
  from dit_jax.shapes import world
  from dit_jax.shapes.finetune_eval import unrelated_scenes
  names = lambda concept, scene: re.search(rf"\b{re.escape(concept)}\b", world.caption(scene))
  for category, concept in [("colour", "red"), ("position", "on the left"), ("character", "zork")]:
    scenes = unrelated_scenes(64, category, concept)
    assert len(scenes) == 64 and not any(names(concept, s) for s in scenes)
  # Without a concept nothing is left out.
  assert any(names("red", s) for s in unrelated_scenes(64))


@pytest.mark.slow   # two short fine-tuning runs of the Shapes model
def test_a_workdir_holding_another_run_is_refused(tmp_path):
  from dit_jax.shapes import tasks
  config = tasks.unlearn_config()
  esd = tasks.unlearn_config()
  esd.objective = "esd"
  assert esd.workdir != config.workdir        # each objective has its own default workdir
  # Nothing here reads the fixed batch's loss: leaving it out saves compiling a second program.
  small = dict(batch_size=2, num_images=4, log_every=1, fixed_batch_loss=False)
  tasks.run_finetune(config, str(tmp_path), "1,2", 2, **small)
  with pytest.raises(SystemExit, match=r"objective: 'ablation' -> 'esd'"):
    tasks.run_finetune(config, str(tmp_path), "1,2", 2, objective="esd", **small)
  with pytest.raises(SystemExit, match=r"blocks: '1,2' -> 'all'"):
    tasks.run_finetune(config, str(tmp_path), "all", 2, **small)
  # fresh restarts a workdir that held another run (that more steps of the same run resume it is
  # tests/trainer_test.py's kill-and-resume test; a third training here cost CI half a minute).
  tasks.run_finetune(config, str(tmp_path), "all", 1, fresh=True, objective="esd", **small)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1]

