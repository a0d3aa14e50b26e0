"""studies/placebo.py: the exact verdict's placebo rate and power, re-ranked on a run's swept
sets, and the README's table from its stored result; the weights' content fingerprint the set
cache keys on."""
import os

import numpy as np
import pytest

from studies import placebo
from dit_jax import provenance
from tests.exact_test import run_rows


def test_placebo_rates_power_and_uniform_p_values_on_a_run(tmp_path, monkeypatch):
  carriers = {f"c{i}": (f"cat{i % 3}", (i,)) for i in range(6)}
  monkeypatch.setattr(placebo, "rows_of", lambda name: run_rows(carriers, ks=(1, 2), effect=0.5))
  result_path = tmp_path / "placebo.json"
  placebo.main(["--run", "toy", "--placebos", "3000", "--effect", "0.5", "--resamples", "20",
                "--result", str(result_path)])
  found = placebo.read_json(str(result_path))["toy"]
  false = found["false_positives"]["removable"]
  assert false["runs"] == 3000 and false["run_rate_interval"][1] < 0.05
  assert found["ks_uniform_p"] > 0.01                       # the tie-randomised p is uniform
  assert all(found["p_at_most"][level] <= float(level) + 0.01 for level in found["p_at_most"])
  assert found["power"]["removable"]["run_rate"] > 0.8
  table = placebo.table(placebo.read_json(str(result_path)))
  assert "| toy (3,000 placebos, 12 cells each) | removable |" in table


def test_the_readme_table_is_the_stored_result():
  from docs import build
  stored = placebo.read_json(placebo.RESULT)
  assert build.placebo() == placebo.table(stored)
  runs = {name: found for name, found in stored.items() if name != "environment"}
  assert {"shapes", "shapes_full_r1"} <= set(runs)   # the default and the fuller run (issue 39)
  for found in runs.values():
    assert found["placebos"] >= 10_000
    assert found["false_positives"]["removable"]["run_rate_interval"][1] <= 0.05
    assert found["ks_uniform_p"] > 0.01


def test_the_models_content_fingerprint_is_the_same_in_any_clone(tmp_path):
  """The set cache and stored results are compared across clones: the fingerprint they record
  must not depend on when a clone wrote its files (the default fingerprint does, for speed on
  large checkpoints)."""
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


@pytest.mark.parametrize("seed", [0])
def test_the_sampled_verdicts_simulation_is_still_available(seed):
  from studies import sampled_placebo
  rows = sampled_placebo.simulate_run(np.random.default_rng(seed), categories=2, ks=(2,), draws=20,
                                      reverse_draws=0)
  assert len(sampled_placebo.verdict_entries(rows)) == 2
