"""Issue 25, item 4: every figure README.md and the model card quote from a run is generated from
its stored JSON (benchmarks/build.py), and the text cannot drift from it."""
import copy
import os

import pytest

from docs import build


@pytest.mark.parametrize("path", build.DOCUMENTS, ids=os.path.basename)
def test_generated_regions_are_what_their_results_give(path):
  assert build.stale(path) == [], ("regenerate with `python -m docs.build`", path)


def test_every_generator_has_its_region_in_a_document():
  text = "".join(open(path).read() for path in build.DOCUMENTS)
  used = {m["name"] for m in build.REGION.finditer(text)}
  assert used == set(build.REGIONS)


def test_a_changed_result_makes_the_text_stale(monkeypatch):
  """What the test above guards against: a rerun whose numbers differ from the README's words."""
  original = build.result

  def changed(name):
    found = copy.deepcopy(original(name))
    if name == "shapes_continue.json":
      found["final"]["heldout"]["mean"] = 0.5
    return found
  monkeypatch.setattr(build, "result", changed)
  assert build.stale(build.DOCUMENTS[0]) == ["model-quality"]


def test_an_unknown_region_is_an_error(tmp_path):
  with pytest.raises(KeyError, match="no generator"):
    build.render("<!-- generated:nothing -->\nold\n<!-- /generated:nothing -->")


def test_the_readme_is_a_guide_with_the_two_commands_on_its_first_screen():
  """Issue 40, item 6: README.md is a guide of about 250 lines (results live in docs/results.md),
  and its first screen holds the install-and-run command and the test command."""
  with open(build.DOCUMENTS[0]) as f:
    lines = f.read().splitlines()
  assert len(lines) <= 260, len(lines)
  first_screen = "\n".join(lines[:30])
  assert "python localize.py --config configs/shapes.py" in first_screen
  assert "python -m pytest -q -n auto --dist loadfile" in first_screen
  # Every generated region lives on the results page but two: the replicated answer (issue 39: the
  # two-replicate table's headline in the README, the table itself on the page) and the shipped
  # model's quality.
  text = "\n".join(lines)
  assert [m["name"] for m in build.REGION.finditer(text)] == ["replicated-answer", "model-quality", "shapes-cpu"]


# Issue 40, item 6: a region states a conclusion only as a rule's outcome on the data, so a changed
# result changes the word, not only the number beside it. Each case: the stored JSON, a change, the
# region's generator, the words the stored data gives and the words the changed data must give.
def _set(path, value):
  def change(found):
    *keys, last = path
    for key in keys:
      found = found[key]
    found[last] = value
  return change


def _not_sufficient_but_one(found):
  for entry in found["summary"]:
    entry["sufficient"] = entry["category"] == "colour" and entry["k"] == 4


def _nothing_localized(found):
  for entry in found["summary"]:
    entry["localized"] = False


def _took_and_held(found):
  for row in found["sets"]:
    if row["counted"]:
      row["causal_holds"] = True


CONCLUSIONS = {
    "a CPU speed target": ("shapes_cpu.json", _set(("ratios", "generation"), 1.1), build.shapes_cpu,
                           "generation 1.56x diffusers (target >= 1.4x: met)",
                           "generation 1.10x diffusers (target >= 1.4x: not met)"),
    "the model's bar": ("shapes_continue.json", _set(("final", "heldout_seed7", "mean"), 0.7),
                        build.model_quality, "is met on the first set and met on the second",
                        "is met on the first set and not met on the second"),
    "underfit or overfit": ("shapes_continue.json",
                            _set(("diagnosis_of_the_12500_step_model", "train split", "accuracy", "shape"), 0.9),
                            build.model_limits, "It was underfit, not overfit",
                            "It was overfit in part: on training captions shape 0.90 reached the bar"),
    "training on reaches the bar": ("shapes_continue.json", _set(("curve_heldout", -1, "accuracy", "character"), 0.5),
                                    build.model_limits, "shape and character reach the bar (0.60)",
                                    "shape reaches the bar (0.60); character stays below"),
    "which categories are localized": ("localize_shapes_full.json", _nothing_localized, build.shapes_findings,
                                       "character at K = 2 and 4 localized", "no category is localized"),
    "which categories are sufficient": ("localize_shapes_full.json", _not_sufficient_but_one,
                                        build.shapes_findings, "no category is shown sufficient",
                                        "colour at K = 4 shown sufficient"),
    "the placebo's false-positive rate": ("placebo.json",
                                          _set(("shapes", "false_positives", "removable", "run_rate_interval"),
                                               [0.01, 0.07]),
                                          build.placebo_reading, "removable: 0.0002 of runs with any yes, below 0.05",
                                          "removable: 0.0002 of runs with any yes, not shown below 0.05"),
    "the README's replicated answer": ("localize_shapes_full_r2.json",
                                       _set(("exact", "primary", 2, "holds"), True),
                                       build.replicated_answer, "replicate 2 at no K",
                                       "replicate 2 at K = 4"),
    "the planted causal check": ("planted_knowledge.json", _took_and_held, build.planted,
                                 "the causal check fails): mlp-quib.", "the causal check fails): none."),
}


@pytest.mark.parametrize("case", CONCLUSIONS, ids=str)
def test_a_changed_result_changes_the_conclusion_words(monkeypatch, case):
  name, change, generator, stored_words, changed_words = CONCLUSIONS[case]
  assert stored_words in generator() and changed_words not in generator()
  original = build.result

  def changed(asked):
    found = copy.deepcopy(original(asked))
    if asked == name:
      change(found)
    return found
  monkeypatch.setattr(build, "result", changed)
  said = generator()
  assert changed_words in said and stored_words not in said, said


def _copy_results(tmp_path, names):
  import shutil
  for name in names:
    shutil.copy(os.path.join(build.RESULTS, name), tmp_path / name)
  return str(tmp_path)


def test_the_memory_plan_words_follow_the_plans(tmp_path):
  """"less than half", "met" and "under 80 GB" come from the stored plans' figures."""
  import json
  from benchmarks import memory_plan
  names = [n for n in os.listdir(build.RESULTS) if n.startswith("memory_plan_")]
  folder = _copy_results(tmp_path, names)
  said = memory_plan.readme_table(folder)
  assert "with `--config.remat=True` (0.72x without): less than half (target <= 0.5: met)" in said
  assert "each under 80 GB (target < 80 GB: met)" in said
  path = tmp_path / "memory_plan_pixart_full_tpu_v5p_remat.json"
  plan = json.loads(path.read_text())
  plan["localized_over_full"] = 0.6
  plan["rows"][0]["xla_plan_bytes"]["peak"] = 90e9
  path.write_text(json.dumps(plan))
  flux = tmp_path / "memory_plan_flux_full_tpu_v5p_remat.json"
  plan = json.loads(flux.read_text())
  plan["rows"][0]["xla_plan_bytes"]["peak"] = 90e9
  flux.write_text(json.dumps(plan))
  said = memory_plan.readme_table(folder)
  assert "(0.72x without): half or more (target <= 0.5: not met)" in said
  assert "not each under 80 GB (target < 80 GB: not met)" in said


def test_the_gpu_targets_met_follow_the_runs(tmp_path):
  """The GPU paragraph's "met" / "not met" are each ratio against its target."""
  import json
  from benchmarks import run_all
  names = [n for n in os.listdir(build.RESULTS) if n.endswith("_full_gpu.json")]
  folder = _copy_results(tmp_path, names)
  said = run_all.readme_summary(folder)
  assert "1.32x diffusers eager (target >= 1.2x: met)" in said
  assert "4.16x diffusers (target >= 1.5x: met)" in said
  for name, key, value in (("forward_flux_full_gpu.json", "diffusers_eager", None),
                           ("sweep_pixart_full_gpu.json", "speedup", 1.2)):
    path = tmp_path / name
    found = json.loads(path.read_text())
    if value is None:   # diffusers eager twice as fast: the ratio falls under the target
      found[key]["median_ms"] = found["flax"]["median_ms"] / 2
    else:
      found[key] = value
    path.write_text(json.dumps(found))
  said = run_all.readme_summary(folder)
  assert "0.50x diffusers eager (target >= 1.2x: not met)" in said
  assert "1.20x diffusers (target >= 1.5x: not met)" in said


def test_the_replicates_table_names_every_cell_where_the_replicates_disagree(monkeypatch):
  """Issue 39, item 7: the two replicates' verdicts side by side, and a cell whose verdict differs
  between them is named (here the default run's result stands in for both replicates)."""
  stored = build.result("localize_shapes.json")
  second = copy.deepcopy(stored)
  flipped = next(e for e in second["exact"]["concept"] if e["present"] and not e["localized"])
  flipped.update(tested=True, removable=True, localized=True)
  found = {"localize_shapes_full_r1.json": stored, "localize_shapes_full_r2.json": stored,
           "localize_shapes_full_both.json": stored}
  monkeypatch.setattr(build, "result", lambda name: found[name])
  monkeypatch.setattr(build.os.path, "exists", lambda path: True)
  same = build.shapes_replicates()
  assert "same answer in every cell" in same and "| K=2 (all concepts) |" in same
  found["localize_shapes_full_r2.json"] = second
  differ = build.shapes_replicates()
  cell = f"{flipped['concept']} K={flipped['k']}"
  assert "differ in 1 of" in differ and cell in differ.split("differ in")[1]
  # "not tested" (the hierarchy stopped above) and "not shown" (tested, no) are the same answer
  flipped.update(tested=True, removable=False, localized=False)
  assert "same answer in every cell" in build.shapes_replicates()
