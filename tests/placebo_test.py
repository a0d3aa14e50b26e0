"""benchmarks/placebo.py's stored runs: a placebo run counts only as a run of the current default
config on the shipped model, so a stored run of other inputs is refused, never read back."""
import gzip
import json
import os

import numpy as np
import pytest

from benchmarks import placebo
from dit_jax import provenance

CURRENT = {"reverse_draws": 0, "random_draws": 30, "weights": "abc", "seed": 0}


@pytest.fixture
def stored(tmp_path, monkeypatch):
  """A placebo_runs folder in tmp_path, the current inputs fixed, and a job that must not run."""
  monkeypatch.setattr(placebo, "STORED", str(tmp_path / "placebo_runs"))
  monkeypatch.setattr(placebo, "expected_inputs", lambda config: dict(CURRENT))
  os.makedirs(placebo.STORED)

  def write(unit):
    with gzip.open(os.path.join(placebo.STORED, "seed_0.json.gz"), "wt") as f:
      json.dump(unit, f)
  return write


def rows():
  return placebo.simulate_run(np.random.default_rng(0), categories=2, ks=(2,), draws=20, reverse_draws=0)


def test_a_stored_run_of_the_current_inputs_is_read_back(stored, tmp_path):
  stored({"inputs": dict(CURRENT), "rows": rows()})
  entries = placebo.model_run(0, str(tmp_path / "runs"))
  assert len(entries) == 2 and not os.path.exists(tmp_path / "runs")   # nothing was run


def test_a_stored_run_of_other_inputs_is_refused_with_the_difference_named(stored, tmp_path):
  stored({"inputs": {**CURRENT, "reverse_draws": 10}, "rows": rows()})
  with pytest.raises(SystemExit, match=r"reverse_draws: 10 -> 0.*--fresh"):
    placebo.model_run(0, str(tmp_path / "runs"))


def test_a_stored_run_without_its_inputs_is_refused(stored, tmp_path):
  stored(rows())      # the format before inputs were recorded: the rows alone
  with pytest.raises(SystemExit, match="stored without its inputs"):
    placebo.model_run(0, str(tmp_path / "runs"))


def test_fresh_recomputes_a_stale_run_and_stores_it_with_its_inputs(stored, tmp_path, monkeypatch):
  from dit_jax.jobs import localize
  stored({"inputs": {**CURRENT, "reverse_draws": 10}, "rows": []})
  made = rows()

  def job(config, workdir, memo=None):
    assert config.fresh and config.placebo and config.seed == 0
    os.makedirs(workdir)
    with open(os.path.join(workdir, "interventions.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in made)
  monkeypatch.setattr(localize, "run", job)
  assert len(placebo.model_run(0, str(tmp_path / "runs"), fresh=True)) == 2
  with gzip.open(os.path.join(placebo.STORED, "seed_0.json.gz"), "rt") as f:
    assert json.load(f)["inputs"] == CURRENT


def test_the_models_content_fingerprint_is_the_same_in_any_clone(tmp_path):
  """Stored runs are compared across clones: the fingerprint they record must not depend on when
  a clone wrote its files (the default fingerprint does, for speed on large checkpoints)."""
  (tmp_path / "transformer").mkdir()
  (tmp_path / "transformer" / "model.safetensors").write_bytes(b"weights")
  (tmp_path / "tokenizer").mkdir()
  (tmp_path / "tokenizer" / "vocab.txt").write_text("a b")
  content, timed = (provenance.weights_fingerprint(str(tmp_path), content=True),
                    provenance.weights_fingerprint(str(tmp_path)))
  os.utime(tmp_path / "tokenizer" / "vocab.txt", (1, 1))
  assert provenance.weights_fingerprint(str(tmp_path), content=True) == content
  assert provenance.weights_fingerprint(str(tmp_path)) != timed
  (tmp_path / "tokenizer" / "vocab.txt").write_text("a c")
  assert provenance.weights_fingerprint(str(tmp_path), content=True) != content


def test_a_verdict_no_cell_tested_is_not_counted_as_a_rate(monkeypatch):
  """The default config runs no random sets in reverse: its placebo runs test no sufficiency, and
  the table must say so rather than count the untested cells as negatives."""
  from benchmarks import readme
  entries = [{"localized": None, "removable": False, "sufficient": None},
             {"localized": False, "removable": True, "sufficient": None}]
  per_run = [placebo.count(entries)] * 3
  found = placebo.rates(per_run)
  assert found["removable"]["cells"] == 6 and found["removable"]["runs_with_any"] == 3
  assert found["localized"]["cells"] == 3 and found["localized"]["positive_cells"] == 0
  assert found["sufficient"]["runs"] == 0 and found["sufficient"]["run_rate"] is None
  monkeypatch.setattr(readme, "result", lambda name: {"model": {"rates": found}})
  rows = {line.split(" | ")[1]: line for line in readme.placebo().splitlines()[2:]}
  assert "not tested in any run" in rows["sufficient"] and "0/3 | 0.000" in rows["localized"]
