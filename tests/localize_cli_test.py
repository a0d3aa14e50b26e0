"""End to end: localize.py on the shipped Shapes model (few steps and prompts), and its resume."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ports import loading
from tests.pixart_test import REPO
from tests.testutil import rel_error

SHAPES = os.path.join(REPO, "assets", "shapes")


def run_localize(out_dir, *extra):
  return subprocess.run(
      [sys.executable, "localize.py", "--config", "configs/shapes.py", f"--config.out_dir={out_dir}",
       "--config.num_steps=4", "--config.prompts_per_concept=2", "--config.random_draws=2",
       "--config.categories=('shape', 'place')", *extra],
      cwd=REPO, capture_output=True, text=True)


@pytest.mark.slow
def test_localize_shapes_end_to_end_and_resume(tmp_path):
  result = run_localize(tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "top/random" in result.stdout   # the summary table is printed
  for name in ("scores.json", "scores.csv", "heatmap.png", "interventions.csv", "summary.json",
               "auto_k.json", "run.json", "grids/circle.png", "curves/place.png"):
    assert (tmp_path / name).exists(), name
  scores = json.loads((tmp_path / "scores.json").read_text())
  assert set(scores) == {"circle", "the sky"} and len(scores["circle"]["score_wo"]) == 12
  rows = [json.loads(line) for line in (tmp_path / "interventions.jsonl").read_text().splitlines()]
  kinds = {r["kind"] for r in rows}
  assert kinds == {"none", "top", "bottom", "random", "reverse"}
  judge = json.loads((tmp_path / "run.json").read_text())["judge"]
  assert judge["files"]["params.safetensors"]   # the judge's file hash is recorded
  # A rerun finds every concept's results on disk and recomputes nothing.
  stamp = os.path.getmtime(tmp_path / "scores" / "circle.json")
  again = run_localize(tmp_path)
  assert again.returncode == 0, again.stderr[-3000:]
  assert os.path.getmtime(tmp_path / "scores" / "circle.json") == stamp


@pytest.mark.slow
def test_shipped_transformer_matches_diffusers():
  from diffusers import PixArtTransformer2DModel
  model = PixArtTransformer2DModel.from_pretrained(os.path.join(SHAPES, "transformer")).eval()
  module, params = loading.load(SHAPES, "pixart")
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 32, 32, 3)).astype(np.float32)
  caption = rng.standard_normal((2, 32, 64)).astype(np.float32)
  mask = np.ones((2, 32), np.float32)
  mask[:, 12:] = 0
  t = np.array([900.0, 40.0], np.float32)
  with torch.no_grad():
    expected = model(torch.from_numpy(x).permute(0, 3, 1, 2), encoder_hidden_states=torch.from_numpy(caption),
                     timestep=torch.from_numpy(t), encoder_attention_mask=torch.from_numpy(mask)).sample
  ours = module.apply({"params": params}, x, t, caption, mask)
  assert rel_error(ours, expected.permute(0, 2, 3, 1).numpy()) < 1e-5
