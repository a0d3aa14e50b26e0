"""Runs a user can trust: no poisoned checkpoints, interrupts that resume cleanly, errors that name
what is wrong (issue 14)."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dit_jax.train import loop


@pytest.fixture(scope="module")
def tiny():
  """A one-parameter-vector model: fit's bookkeeping is what is tested, and compiling a real
  backbone would be most of the time."""
  trainable = {("w",): jnp.zeros((4,))}
  loss_fn = lambda p, batch, key, aux: jnp.mean((p["w"] * batch["x"] - 1.0) ** 2)
  optimizer = loop.make_optimizer(1e-2, 1, 10)
  step = loop.make_train_step(loss_fn, optimizer, frozen={})
  # The step donates its state: every run starts from its own copy.
  fresh = lambda: loop.init_state(jax.tree_util.tree_map(jnp.copy, trainable), optimizer, 0, ema=False)
  batch = {"x": np.ones((4,), np.float32)}
  return step, fresh, batch, {"x": np.full((4,), np.nan, np.float32)}


def run(tiny, tmp_path, draw, steps, log_every=10, checkpoint_every=3, state=None):
  step, fresh, _, _ = tiny
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  state = state if state is not None else fresh()
  return loop.fit(step, state, draw, steps=steps, workdir=str(tmp_path), checkpoints=checkpoints,
                      log_every=log_every, checkpoint_every=checkpoint_every), checkpoints


def all_finite(state) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.trainable))


def steps_logged(tmp_path) -> list[int]:
  return [r["step"] for r in loop.MetricsLog(str(tmp_path / "metrics.jsonl")).records()]


# ---------------------------------------------------------------------------------------------
# Item 3: a non-finite state is never saved, and never called good.


def test_non_finite_state_between_logged_steps_is_never_saved(tiny, tmp_path):
  _, _, batch, poisoned = tiny
  draw = lambda i: poisoned if i == 4 else batch      # step 5 poisons the weights; loss not logged
  with pytest.raises(loop.NonFiniteLoss, match=r"last good checkpoint \(step 3\)"):
    run(tiny, tmp_path, draw, steps=10)
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  assert checkpoints.latest_step() == 3
  _, fresh, _, _ = tiny
  assert all_finite(checkpoints.restore_latest(fresh()))


def test_non_finite_before_the_first_checkpoint_says_there_is_none(tiny, tmp_path):
  _, _, _, poisoned = tiny
  with pytest.raises(loop.NonFiniteLoss, match="no checkpoint has been saved yet") as error:
    run(tiny, tmp_path, lambda i: poisoned, steps=10)
  assert "None" not in str(error.value)
  assert loop.Checkpoints(str(tmp_path / "ckpt")).latest_step() is None


def test_a_non_finite_checkpoint_on_disk_is_refused_on_restore(tiny, tmp_path):
  import orbax.checkpoint as ocp
  _, fresh, _, _ = tiny
  state = fresh()
  state = state._replace(trainable={k: jnp.full_like(v, jnp.nan) for k, v in state.trainable.items()})
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  # Written as an older version did, without the check.
  checkpoints.manager.save(0, args=ocp.args.StandardSave(loop._as_tree(state)))
  checkpoints.manager.wait_until_finished()
  with pytest.raises(loop.NonFiniteLoss, match=r"step 0 .*not finite"):
    checkpoints.restore_latest(fresh())
  with pytest.raises(loop.NonFiniteLoss, match="not finite"):
    checkpoints.save(state)


@pytest.mark.parametrize("learning_rate", [float("nan"), 0.0, -1e-4, float("inf")])
def test_nan_or_non_positive_learning_rate_is_a_config_error(learning_rate):
  with pytest.raises(ValueError, match=r"learning_rate=.*positive"):
    loop.make_optimizer(learning_rate, 1, 10)


# ---------------------------------------------------------------------------------------------
# Item 8: Ctrl-C saves, says how to resume, exits non-zero; a resumed log has no repeated steps.


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tiny, tmp_path, capsys):
  _, _, batch, _ = tiny

  def draw(i):
    if i == 4:
      raise KeyboardInterrupt
    return batch

  try:
    with pytest.raises(SystemExit) as stop:
      run(tiny, tmp_path, draw, steps=10, log_every=1)
  except KeyboardInterrupt:
    pytest.fail("KeyboardInterrupt escaped fit")
  assert stop.value.code not in (0, None)
  assert loop.Checkpoints(str(tmp_path / "ckpt")).latest_step() == 4
  out = capsys.readouterr().out
  assert "interrupted; saved a checkpoint at step 4" in out and "resume" in out and str(tmp_path) in out


def test_ctrl_c_after_the_state_went_non_finite_saves_nothing(tiny, tmp_path, capsys):
  _, _, batch, poisoned = tiny

  def draw(i):
    if i == 2:
      raise KeyboardInterrupt
    return poisoned

  with pytest.raises(SystemExit):
    run(tiny, tmp_path, draw, steps=10)
  assert loop.Checkpoints(str(tmp_path / "ckpt")).latest_step() is None
  out = capsys.readouterr().out
  assert "not finite" in out and "no checkpoint has been saved yet" in out


def test_resumed_run_rewrites_later_steps_and_continues_the_clock(tiny, tmp_path):
  _, fresh, batch, _ = tiny

  def crashing(i):
    if i == 4:
      raise RuntimeError("the machine went away")
    time.sleep(0.3)
    return batch

  with pytest.raises(RuntimeError):
    run(tiny, tmp_path, crashing, steps=6, log_every=1)
  assert steps_logged(tmp_path) == [1, 2, 3, 4]               # checkpoint at 3: step 4 is redone
  checkpoints = loop.Checkpoints(str(tmp_path / "ckpt"))
  resumed = checkpoints.restore_latest(fresh())
  run(tiny, tmp_path, lambda i: batch, steps=6, log_every=1, state=resumed)
  assert steps_logged(tmp_path) == [1, 2, 3, 4, 5, 6]
  seconds = [r["seconds"] for r in loop.MetricsLog(str(tmp_path / "metrics.jsonl")).records()]
  assert seconds == sorted(seconds) and seconds[3] >= 0.9


# ---------------------------------------------------------------------------------------------
# Item 11: orbax's logging does not break the progress bar.


def test_fit_keeps_orbax_logging_off_the_terminal(tiny, tmp_path, caplog):
  from absl import logging
  _, _, batch, _ = tiny
  before = logging.get_verbosity()
  logging.set_verbosity(logging.INFO)     # as in a notebook, or absl's app.run with -v
  try:
    run(tiny, tmp_path, lambda i: batch, steps=2, checkpoint_every=1)
    assert logging.get_verbosity() == logging.INFO
  finally:
    logging.set_verbosity(before)
  assert not [r.getMessage() for r in caplog.records if r.name == "absl"][:3]


# ---------------------------------------------------------------------------------------------
# Item 5: a damaged .safetensors file is named, with what was expected of it.


@pytest.mark.parametrize("keep", [0, 5, 100, "half"])
def test_truncated_or_empty_safetensors_names_the_file(tmp_path, keep):
  import json
  import torch
  from safetensors.torch import save_file
  from ports import checkpoints as common
  folder = tmp_path / "transformer"
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps({"_class_name": "PixArtTransformer2DModel"}))
  path = folder / common.WEIGHTS_NAME
  save_file({"a": torch.zeros(64, 64), "b": torch.zeros(8)}, str(path))
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2 if keep == "half" else keep])
  for read in (lambda: common.read_state_dict(str(path)), lambda: common.read_diffusers_folder(str(tmp_path))):
    with pytest.raises(common.CheckpointError) as error:
      read()
    message = str(error.value)
    assert str(path) in message and f"{len(data) // 2 if keep == 'half' else keep} bytes" in message
    assert "truncated" in message and "safetensors" in message


# ---------------------------------------------------------------------------------------------
# Item 7: empty inputs are named before any work starts.


def shapes_config(**overrides):
  from configs import shapes
  from tests.testutil import set_keys
  return set_keys(shapes.get_config(), **overrides)


@pytest.mark.parametrize("name, key", [("seeds", "sample.seeds"), ("ks", "sweep.ks")])
def test_localize_config_with_no_seeds_or_ks_is_refused(name, key):
  from dit_jax.localize import job
  job.validate_localize_config(shapes_config())
  with pytest.raises(ValueError, match=rf"config\.{key} is empty"):
    job.validate_localize_config(shapes_config(**{name: ()}))


@pytest.mark.parametrize("key, flag", [("random_draws", "removable"), ("reverse_draws", "sufficient")])
def test_too_few_random_sets_to_decide_are_warned(key, flag):
  """With R sets the set-level p is at least 1 / (R + 1): 19 can never give p < 0.05, 20 can; 0
  reverse sets is the default's deliberate "untested", no warning."""
  import warnings
  from dit_jax.localize import job
  with pytest.warns(UserWarning, match=rf"config\.sweep\.{key}=19: .* 1/20 = 0\.050, so no cell can be '{flag}'"):
    job.validate_localize_config(shapes_config(**{"reverse_draws": 0, key: 19}))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    job.validate_localize_config(shapes_config(**{key: 20}))
    job.validate_localize_config(shapes_config())


def test_localize_cli_with_no_ks_stops_before_any_work(tmp_path):
  import subprocess
  import sys
  from tests.pixart_test import REPO
  result = subprocess.run([sys.executable, "localize.py", "--config", "configs/shapes.py",
                           f"--config.out_dir={tmp_path}", "--config.sweep.ks=()"],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0
  assert "config.sweep.ks is empty" in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "scores").exists()


# ---------------------------------------------------------------------------------------------
# Item 11: messages that read right; --help that shows defaults.


def test_unknown_category_message_is_plural_and_names_the_choices():
  from dit_jax.shapes import plugin
  with pytest.raises(ValueError, match=r"valid categories are \[") as error:
    plugin.shapes().subset(categories=["bogus"])
  assert "categorys" not in str(error.value)


def test_unknown_shapes_category_or_concept_names_the_valid_ones():
  from dit_jax.shapes import world
  with pytest.raises(ValueError) as error:
    world.concept_scenes("animal", "zork", 1)
  assert "None" not in str(error.value) and "'character'" in str(error.value)
  with pytest.raises(ValueError, match=r"'red'.*'character'.*'zork'") as error:
    world.concept_scenes("character", "red", 1)


def test_finetune_eval_help_shows_defaults(capsys):
  from dit_jax.shapes import finetune_eval
  with pytest.raises(SystemExit):
    finetune_eval.main(["--help"])
  out = capsys.readouterr().out
  assert "\n    python localize.py --config configs/shapes.py " in out   # the description keeps its layout
  out = " ".join(out.split())                                        # help lines wrap to the terminal
  assert "(default: 300)" in out and "(default: runs/finetune_eval)" in out


# ---------------------------------------------------------------------------------------------
# Item 10: the README's commands do what they say.


def repo_text(name: str) -> str:
  import os
  from tests.pixart_test import REPO
  with open(os.path.join(REPO, name)) as f:
    return f.read()


@pytest.mark.parametrize("name", ["README.md", ".ci/run"])
def test_torch_comes_from_the_cpu_index_with_a_fallback(name):
  text = repo_text(name).replace("\\\n", " ")                     # shell line continuations
  lines = [l for l in text.splitlines() if "pip install" in l and "torch==2.13.0" in l]
  assert lines, f"{name} installs no pinned torch"
  for line in lines:
    cpu, _, fallback = line.partition("||")
    assert "--index-url https://download.pytorch.org/whl/cpu" in cpu, line
    # Where the CPU index cannot be reached, the same pin from the default index.
    assert "torch==2.13.0" in fallback and "--index-url" not in fallback, line


def test_readme_python_snippets_import_what_they_use():
  import ast
  import builtins
  import re
  for block in re.findall(r"```python\n(.*?)```", repo_text("README.md"), re.S):
    tree = ast.parse(block)
    defined = set(dir(builtins))
    for node in ast.walk(tree):
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        defined |= {(a.asname or a.name).split(".")[0] for a in node.names}
      elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        defined.add(node.id)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert not used - defined, block


def test_readme_says_to_run_from_the_repository_root():
  readme = repo_text("README.md")
  assert "repository root" in readme[:readme.index("python localize.py")]


# ---------------------------------------------------------------------------------------------
# Item 12: the quick subset (-m "not slow") leaves out every test that takes more than ~5 s here.

HEAVY = ["sharding_test::test_eight_devices_match_one", "flux_test::test_text_residual_swap",
         "finetune_test::test_unlearning_targets", "training_test::test_resume_gives_the_same_parameters",
         "pipeline_test::test_generate_cli_writes_pngs", "pixart_test::test_round_trip_to_diffusers_folder",
         "pixart_test::test_original_pth_via_cli", "sana_test::test_text_swap",
         "scores_test::test_flux_scores_match_reference",
         "lora_test::test_lora_trains_factors_only_and_loads_in_peft",
         "localization_test::test_sweep_matches_plain_sampling",
         "finetune_test::test_personalization_adds_the_prior_term",
         "scores_test::test_pixart_scores_match_reference",
         "localization_test::test_scores_shape_and_aggregation",
         "flux_test::test_diffusers_folder_parity_float32"]


@pytest.mark.parametrize("node", HEAVY)
def test_heavy_tests_are_marked_slow(node):
  import importlib
  module, name = node.split("::")
  test = getattr(importlib.import_module(f"tests.{module}"), name)
  assert "slow" in {mark.name for mark in getattr(test, "pytestmark", [])}, node


def test_the_weights_fingerprint_ignores_documentation_beside_the_weights(tmp_path):
  """Editing a pipeline folder's model card or sample picture decides no result, so it must not
  make a resumed run (or a placebo run's copied scores) look computed from other weights; a
  tokenizer or weight file still does."""
  from dit_jax import provenance
  (tmp_path / "transformer").mkdir()
  (tmp_path / "transformer" / "model.safetensors").write_bytes(b"weights")
  (tmp_path / "tokenizer").mkdir()
  (tmp_path / "tokenizer" / "merges.txt").write_text("a b")
  (tmp_path / "MODEL_CARD.md").write_text("card")
  before = provenance.weights_fingerprint(str(tmp_path))
  (tmp_path / "MODEL_CARD.md").write_text("a longer card")
  (tmp_path / "samples.png").write_bytes(b"png")
  assert provenance.weights_fingerprint(str(tmp_path)) == before
  (tmp_path / "tokenizer" / "merges.txt").write_text("a b c")
  assert provenance.weights_fingerprint(str(tmp_path)) != before
  (tmp_path / "transformer" / "model.safetensors").write_bytes(b"other")
  assert provenance.weights_fingerprint(str(tmp_path)) != before


@pytest.mark.parametrize("steps", [-5, 0])
def test_train_with_no_steps_stops_before_exporting_the_input_as_trained(tmp_path, steps):
  """Issue 28, item 4: `train.py ... --config.steps=-5` trained nothing and exported the input
  weights as the run's result; now it stops, naming the key, before any work."""
  from dit_jax.train import job as train_job
  from dit_jax.shapes import tasks
  config = tasks.unlearn_config()
  config.steps = steps
  with pytest.raises(ValueError, match=rf"config.steps={steps}: it counts"):
    train_job.run(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()
