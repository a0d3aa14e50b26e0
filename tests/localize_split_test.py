"""Localization split over processes (issue 27): each takes concepts[index::count] and writes only
its concepts' files; a merge (config.hosts.merge_only) then writes the same reports as one process."""
import json
import os

import ml_collections
import pytest

from dit_jax import sharding
from dit_jax.localize import hosts
from tests.localize_cli_test import run_localize

# Three concepts of two categories: a two-way split gives shares of two and one.
QUICK = dict(num_steps=2, categories=("shape", "place"), concepts=("circle", "square", "the sky"),
             concepts_per_category=0, random_draws=2, reverse_draws=1, depth_draws=0)


def concept_files(out) -> dict[str, float]:
  """Every per-concept result file, relative path -> modification time."""
  found = {}
  for folder in ("scores", "interventions"):
    for name in sorted(os.listdir(out / folder)):
      found[f"{folder}/{name}"] = os.path.getmtime(out / folder / name)
  return found


def lines(path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow   # four short localization runs of the Shapes model
def test_two_processes_and_a_merge_give_one_process_results(tmp_path):
  one, split = tmp_path / "one", tmp_path / "split"
  run_localize(one, **QUICK)

  first = run_localize(split, process_index=0, process_count=2, **QUICK)
  assert {r["concept"] for r in first} == {"circle", "the sky"}        # concepts[0::2]
  # Only its concepts' files: nothing that every process would write, no reports.
  assert set(concept_files(split)) == {"scores/circle.json", "scores/the_sky.json",
                                       "interventions/circle.json", "interventions/the_sky.json"}
  assert not any((split / name).exists() for name in ("run.json", "scores.json", "summary.json",
                                                       "interventions.jsonl", "report.html"))
  with pytest.raises(SystemExit, match=r"merge_only: 2 result files are missing .*square\.json"):
    run_localize(split, merge_only=True, **QUICK)

  second = run_localize(split, process_index=1, process_count=2, **QUICK)
  assert {r["concept"] for r in second} == {"square"}                  # concepts[1::2]
  written = concept_files(split)
  run_localize(split, merge_only=True, **QUICK)
  assert concept_files(split) == written                                # the merge computes nothing

  assert lines(split / "interventions.jsonl") == lines(one / "interventions.jsonl")
  for name in ("summary.json", "scores.json", "auto_k.json", "agreement.json"):
    assert json.loads((split / name).read_text()) == json.loads((one / name).read_text()), name
  assert (split / "summary.txt").read_text() == (one / "summary.txt").read_text()
  assert (split / "report.html").exists()


def config(**values):
  return ml_collections.ConfigDict({"process_index": 0, "process_count": 0, **values})


def test_the_share_comes_from_the_config_or_from_jax(monkeypatch):
  assert hosts.process_share(config()) == (0, 1)                     # one plain process
  assert hosts.process_share(config(process_index=2, process_count=3)) == (2, 3)
  with pytest.raises(ValueError, match="without config.hosts.process_count: give both"):
    hosts.process_share(config(process_index=1))
  with pytest.raises(ValueError, match=r"numbered 0\.\.1"):
    hosts.process_share(config(process_index=2, process_count=2))
  # After jax.distributed.initialize (a TPU pod slice's hosts): jax says which process this is.
  monkeypatch.setattr(hosts.jax, "process_index", lambda: 1)
  monkeypatch.setattr(hosts.jax, "process_count", lambda: 4)
  assert hosts.process_share(config()) == (1, 4)
  assert hosts.process_share(config(process_index=1, process_count=4)) == (1, 4)
  with pytest.raises(ValueError, match="jax.distributed runs this as process 1 of 4"):
    hosts.process_share(config(process_index=0, process_count=2))


def test_merge_only_refuses_fresh_and_unknown_device_counts_are_named(tmp_path):
  with pytest.raises(ValueError, match="merge_only with fresh=True"):
    run_localize(tmp_path, merge_only=True, fresh=True)
  with pytest.raises(ValueError, match=r"num_devices=9: this process has \d+ devices"):
    sharding.local_mesh(num_devices=9)
