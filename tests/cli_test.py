"""Issue 38 (a newcomer's first hour): what the entry points (localize.py, train.py,
python -m dit_jax.generate) say when the input is wrong, and what they offer."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import shapes as shapes_config
from dit_jax import entry
from dit_jax.shapes import ASSETS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, env=None, timeout=300):
  """Run an entry point from the repository root; (exit code, stdout + stderr)."""
  done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, **(env or {})})
  return done.returncode, done.stdout + done.stderr


def finetune_workdir(path):
  """What a fine-tuning run leaves: its exported transformer/ and its inputs record, no pipeline."""
  shutil.copytree(ASSETS / "transformer", path / "transformer")
  (path / "inputs.json").write_text(json.dumps({"run": {"checkpoint": str(ASSETS)}}))
  return path


def test_a_finetuning_workdir_as_checkpoint_names_config_transformer(tmp_path):
  """Issue 38, item 4: it was a FileNotFoundError traceback about tokenizer/."""
  workdir = finetune_workdir(tmp_path / "run")
  config = shapes_config.get_config()
  config.checkpoint = str(workdir)
  with pytest.raises(SystemExit) as stop:
    entry.require_pipeline(config)
  assert (f"--config.checkpoint={ASSETS} --config.transformer={workdir}/transformer"
          in str(stop.value))


@pytest.mark.slow   # two short generate.py processes (~25 s)
def test_generate_from_a_finetuning_workdir(tmp_path):
  workdir = finetune_workdir(tmp_path / "run")
  out = tmp_path / "images"
  common = ("-m", "dit_jax.generate", "--config", "configs/shapes.py", "--config.prompt=a red circle",
            "--config.num_steps=2", f"--config.generate_dir={out}")
  code, said = cli(*common, f"--config.checkpoint={workdir}")
  assert code != 0 and "Traceback" not in said and "--config.transformer=" in said
  code, said = cli(*common, f"--config.transformer={workdir}/transformer")
  assert code == 0, said
  assert "wrote 1 image to" in said and (out / "0000_0.png").exists()   # item 9: "1 image"
