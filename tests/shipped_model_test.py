"""Nothing a documented command runs writes into the shipped Shapes model (dit_jax/shapes/assets):
the pretraining command of configs/shapes_pretrain.py's docstring, run as a newcomer would, trains
and exports into its own workdir, and the shipped folder's bytes do not change."""
import hashlib
import os
import pathlib
import subprocess
import sys

import pytest

from dit_jax.shapes import ASSETS, model as shapes_model
from tests.pixart_test import REPO


def folder_digest(folder: pathlib.Path) -> str:
  """One hash over every file's relative path and bytes."""
  digest = hashlib.sha256()
  for path in sorted(p for p in folder.rglob("*") if p.is_file()):
    digest.update(str(path.relative_to(folder)).encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()


@pytest.mark.slow
def test_the_documented_pretrain_command_leaves_the_shipped_model_alone(tmp_path):
  before = folder_digest(ASSETS)
  workdir = tmp_path / "pretrain"
  # The documented command, shortened (2 steps, 2 blocks): where it writes does not depend on how
  # long or how deep it trains, and 12 blocks cost CI a minute of compiling.
  run = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), "--config",
       os.path.join(REPO, "configs", "shapes_pretrain.py"), "--config.steps=2",
       "--config.num_images=64", "--config.transformer.num_layers=2", f"--config.workdir={workdir}"],
      cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert folder_digest(ASSETS) == before, "the pretrain command changed dit_jax/shapes/assets"
  # The run's own pipeline folder is complete: usable as --config.checkpoint.
  pipeline = workdir / "pipeline"
  for part in ("transformer", "scheduler", "model_index.json", *shapes_model.SHIPPED_PARTS):
    assert (pipeline / part).exists(), part
  assert str(pipeline / "transformer") in run.stdout


def test_a_changed_scheduler_is_refused_in_the_shipped_folder(tmp_path):
  with pytest.raises(ValueError, match="shipped Shapes model"):
    shapes_model.write_pipeline_index(str(ASSETS), beta_schedule="linear")
  # A copy takes the same change.
  shapes_model.copy_shipped_parts(str(tmp_path))
  shapes_model.write_pipeline_index(str(tmp_path), beta_schedule="linear")
  assert "linear" in (tmp_path / "scheduler" / "scheduler_config.json").read_text()
