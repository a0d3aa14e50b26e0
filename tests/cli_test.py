"""Issue 38 (a newcomer's first hour): what the entry points (localize.py, train.py,
python generate.py) say when the input is wrong, and what they offer."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import shapes as shapes_config
from dit_jax.pipeline import checks
from dit_jax import cli as cli_lib
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
    checks.require_pipeline(config)
  assert (f"--config.checkpoint={ASSETS} --config.generate.transformer={workdir}/transformer"
          in str(stop.value))


@pytest.mark.slow   # two short generate.py processes (~25 s)
def test_generate_from_a_finetuning_workdir(tmp_path):
  workdir = finetune_workdir(tmp_path / "run")
  out = tmp_path / "images"
  common = ("generate.py", "--config", "configs/shapes.py", "--config.generate.prompt=a red circle",
            "--config.sample.num_steps=2", f"--config.generate.out_dir={out}")
  code, said = cli(*common, f"--config.checkpoint={workdir}")
  assert code != 0 and "Traceback" not in said and "--config.generate.transformer=" in said
  code, said = cli(*common, f"--config.generate.transformer={workdir}/transformer")
  assert code == 0, said
  assert "wrote 1 image to" in said and (out / "0000_0.png").exists()   # item 9: "1 image"


def test_a_misspelled_config_key_is_a_short_message(tmp_path):
  """Issue 38, item 7: a 53-line traceback with "Did you mean random_draws" last; with --debug (or
  DIT_JAX_DEBUG=1) the traceback is back."""
  args = ("localize.py", "--config", "configs/shapes.py", "--config.sweep.random_draw=3")
  code, said = cli(*args, env={"DIT_JAX_DEBUG": ""})
  assert code == 1 and "Traceback" not in said, said
  assert 'Did you mean "random_draws"' in said and "--help" in said
  code, said = cli(*args, "--debug")
  assert code == 1 and "Traceback" in said


def test_a_missing_checkpoint_on_a_shapes_run_names_the_shipped_model(tmp_path):
  """It named Hugging Face PixArt weights, after a 19-line traceback."""
  code, said = cli("train.py", "--config", "configs/shapes_personalize.py",
                   "--config.checkpoint=/nowhere/pipeline", f"--config.workdir={tmp_path / 'run'}",
                   env={"DIT_JAX_DEBUG": ""})
  assert code == 1 and "Traceback" not in said, said
  assert "/nowhere/pipeline' does not exist" in said and str(ASSETS) in said
  assert "PixArt-alpha" not in said


def test_every_unreadable_image_is_named_at_once(tmp_path):
  """One per run, before: fix one, rerun, meet the next."""
  from dit_jax.train import data
  for name in ("a.png", "b.jpg", "c.png"):
    (tmp_path / name).write_bytes(b"not an image")
  with pytest.raises(data.DataError, match="3 of 3 images cannot be read") as error:
    data.read_image_folder(str(tmp_path), (16, 16), "a photo of sks")
  assert all(name in str(error.value) for name in ("a.png", "b.jpg", "c.png"))


def test_a_user_error_in_main_is_a_message_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
  monkeypatch.delenv("DIT_JAX_DEBUG", raising=False)
  monkeypatch.setattr(sys, "argv", ["localize.py"])

  def bad_input(argv):
    raise ValueError("config.ks=(1.5,): give whole counts")
  with pytest.raises(SystemExit) as stop:
    cli_lib.run_cli(bad_input)
  assert str(stop.value).startswith("localize.py: config.ks=(1.5,): give whole counts\n")

  def bug(argv):
    raise ZeroDivisionError("a bug")
  with pytest.raises(ZeroDivisionError):
    cli_lib.run_cli(bug)


# ------------------------------------------------------------------ item 9: install and help
def repo_text(name: str) -> str:
  with open(os.path.join(REPO, name)) as f:
    return f.read()


@pytest.mark.parametrize("name", ["README.md", ".ci/run"])
def test_the_cpu_torch_index_gives_up_at_once_where_unreachable(name):
  """Issue 38, item 9: pip retried the unreachable PyTorch index for about 95 s."""
  text = repo_text(name).replace("\\\n", " ")
  lines = [l for l in text.splitlines() if "download.pytorch.org/whl/cpu" in l and "pip" in l]
  assert lines and all("--retries 0" in l and "--timeout 5" in l for l in lines), lines


def test_the_readme_says_how_long_the_suite_takes_and_setup_names_every_family():
  import re
  readme = repo_text("README.md")
  assert re.search(r"takes about \d+ minutes on 2 CPU cores", readme)
  # CI runs the README's test command, the one whose time the README gives.
  command = lambda text: [l.strip() for l in text.splitlines() if l.strip().startswith("python -m pytest")]
  assert command(readme)[:1] == command(repo_text(".ci/run"))
  description = next(l for l in repo_text("setup.cfg").splitlines() if l.startswith("description"))
  assert all(name in description for name in ("PixArt", "FLUX", "SANA", "SD3"))


def test_help_lists_the_config_keys_with_their_comments():
  code, said = cli("localize.py", "--config", "configs/shapes.py", "--help")
  assert code == 0, said
  assert "exact_limit = 500" in said and "reverse_draws = 0    # " in said
  code, said = cli("localize.py", "--help")
  assert code == 0 and "configs/common.py" in said


def test_an_old_flat_key_names_its_new_place(tmp_path):
  """Issue 40, item 4: the keys moved into one subtree per stage; an old command line stops with
  the new key's name (before the model loads), and so does an old key set in Python, which an
  unlocked ConfigDict would otherwise keep as a new key that no stage reads."""
  code, said = cli("localize.py", "--config", "configs/shapes.py", "--config.ks=(1,)",
                   "--config.judge_args.folder=/clip", f"--config.out_dir={tmp_path}",
                   env={"DIT_JAX_DEBUG": ""})
  assert code == 1 and "Traceback" not in said, said
  assert "config.ks moved to config.sweep.ks" in said
  assert "config.judge_args.folder moved to config.judge.args.folder" in said
  assert not (tmp_path / "inputs.json").exists()
  config = shapes_config.get_config()
  config.seeds = (1,)
  from dit_jax.localize import job
  with pytest.raises(ValueError, match=r"config.seeds moved to config.sample.seeds"):
    job.validate_localize_config(config)
  # A training config kept its flat keys: the same names are its own there.
  assert cli_lib.moved_key("batch_size") and cli_lib.has_leaf(
      cli_lib.load_config("configs/shapes_personalize.py"), "batch_size")


def test_help_lists_the_nested_keys_with_their_comments():
  code, said = cli("localize.py", "--config", "configs/shapes_full.py:2", "--help")
  assert code == 0, said
  assert "  sweep.ks = (1, 2, 4)" in said and "  sample.seeds = (1,)" in said
  assert "hosts.intervention_chunk = 4    # interventions per device in one compiled call" in said
  assert "  knowledge.prompt_seed = 2    # which prompts a set that draws them uses" in said
