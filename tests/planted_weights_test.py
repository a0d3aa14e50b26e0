"""Issue 41, item 2b: plantings whose ground truth does not route text (studies/planted_weights.py)
and the table every planting method shares (studies/planted_summary.py, studies/clustered.py)."""
import json

import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from dit_jax import blocks as blocks_lib
from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.shapes import ASSETS
from dit_jax.train import loop, trainer
from dit_jax.verdict import stats


@pytest.fixture(scope="module")
def shapes_model():
  return loading.load(str(ASSETS), "pixart")


def trainable_names(module, params, blocks, parts: str) -> set[str]:
  """What the trainer would train for config.block_parts=`parts`: the names of its trainable tree."""
  config = ml_collections.ConfigDict(dict(blocks=",".join(map(str, blocks)), block_parts=parts,
                                          lora_rank=0))
  trainable, *_ = trainer.trainable_split(config, families.get("pixart"), module, params, params, blocks)
  return {loop.path_name(k) for k in trainable}


def test_the_attention_planting_trains_exactly_the_planted_blocks_attention(shapes_model):
  """Blocks 1 and 10 (whose names prefix those of 11..19 if a prefix rule slips): the trainer's
  trainable tree is exactly this listing, written out from PixArt's block layout, not from
  parameter_selector's rule; and every name in it exists in the model's own parameter tree."""
  module, params = shapes_model
  listed = {f"transformer_blocks.{b}/{attention}/{projection}/{weight}"
            for b in (1, 10) for attention in ("attn1", "attn2")
            for projection in ("to_q", "to_k", "to_v", "to_out.0") for weight in ("kernel", "bias")}
  in_model = {loop.path_name(k) for k in traverse_util.flatten_dict(params)}
  assert listed <= in_model
  parts = ",".join(blocks_lib.BLOCK_PARTS["attention"])
  assert trainable_names(module, params, [1, 10], parts) == listed
  feed_forward = trainable_names(module, params, [1, 10], ",".join(blocks_lib.BLOCK_PARTS["mlp"]))
  assert feed_forward == {f"transformer_blocks.{b}/ff/{layer}/{weight}" for b in (1, 10)
                          for layer in ("net.0.proj", "net.2") for weight in ("kernel", "bias")}


# ------------------------------------------------------------------------------------ the ladder
class FakeAttempts:
  """Looks from a table instead of training: looks[(run key, rung)]; records what ran."""

  def __init__(self, looks):
    self.looks, self.trained, self.localized = looks, [], []

  def train_and_look(self, run, rung):
    self.trained.append((run.key, rung))
    p = run.planting
    return {"method": run.method, "label": p.label, "kind": p.kind, "blocks": list(p.blocks),
            "name": p.name, "seed": run.seed, "rung": rung, "steps": 1, "learning_rate": 1.0,
            "workdir": "", "look_accuracy": self.looks[(run.key, rung)], "seconds": {}}

  def localize(self, unit):
    self.localized.append((unit["label"], unit["seed"], unit["rung"]))
    return {"localizer_scores": {"attention:with_wo": list(np.arange(12.0))}, "weight_change": None}


def test_a_run_that_does_not_take_climbs_and_one_that_takes_stops(tmp_path):
  from studies import planted_weights as pw
  runs = [pw.Run("attention", pw.PLANTINGS[0], 0), pw.Run("attention", pw.PLANTINGS[1], 0),
          pw.Run("mlp", pw.PLANTINGS[2], 1)]
  takes_first, takes_second, never = (run.key for run in runs)
  looks = {(takes_first, 0): 0.5, (takes_second, 0): 0.1, (takes_second, 1): 0.3,
           **{(never, r): 0.0 for r in range(3)}}
  fake = FakeAttempts(looks)
  units = pw.climb(runs, 3, str(tmp_path), lambda: fake, "full")
  # Rung by rung: every first attempt before any second one.
  assert fake.trained == [(takes_first, 0), (takes_second, 0), (never, 0), (takes_second, 1),
                          (never, 1), (never, 2)]
  # Localized once per run, at its final attempt: where it took, or the last rung.
  assert fake.localized == [("single-3", 0, 0), ("single-10", 0, 1), ("pair-4-5", 1, 2)]
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
      f"{key}-rung{r + 1}.json" for key, r in fake.trained)
  assert units[f"{takes_second}-rung1"]["final"] is False and units[f"{takes_second}-rung2"]["took"]
  assert units[f"{never}-rung3"]["final"] and not units[f"{never}-rung3"]["took"]
  # A rerun trains nothing: every run has its outcome.
  again = FakeAttempts(looks)
  pw.climb(runs, 3, str(tmp_path), lambda: again, "full")
  assert again.trained == []
  # A run stopped after a failed rung 1 goes on at rung 2.
  (tmp_path / f"{takes_second}-rung2.json").unlink()
  resumed = FakeAttempts(looks)
  pw.climb(runs, 3, str(tmp_path), lambda: resumed, "full")
  assert resumed.trained == [(takes_second, 1)]


def test_a_longer_ladder_reopens_a_run_that_failed_its_old_last_rung(tmp_path):
  """A run failed on rung 3 of a 3-rung ladder (stored final, localized). With a fourth rung the
  table calls it pending, not failed, and the climb trains rung 4 and localizes that attempt."""
  from studies import planted_summary as ps
  from studies import planted_weights as pw
  run = pw.Run("mlp", pw.PLANTINGS[0], 0)
  looks = {(run.key, r): 0.0 for r in range(3)} | {(run.key, 3): 0.4}
  pw.climb([run], 3, str(tmp_path), lambda: FakeAttempts(looks), "full")
  stored = list(pw.read_units(str(tmp_path), "full").values())
  assert [r["status"] for r in ps.seed_runs(stored, 3)] == ["failed"]
  assert [r["status"] for r in ps.seed_runs(stored, 4)] == ["pending"]
  longer = FakeAttempts(looks)
  units = pw.climb([run], 4, str(tmp_path), lambda: longer, "full")
  assert longer.trained == [(run.key, 3)] and longer.localized == [("single-3", 0, 3)]
  assert [r["status"] for r in ps.seed_runs(list(units.values()), 4)] == ["took"]


def test_next_rung_follows_the_last_attempt():
  from studies.planted_weights import next_rung
  assert next_rung([], 3) == 0
  assert next_rung([{"rung": 0, "took": False}], 3) == 1
  assert next_rung([{"rung": 0, "took": True}], 3) is None
  assert next_rung([{"rung": 0, "took": False}, {"rung": 1, "took": False},
                    {"rung": 2, "took": False}], 3) is None


def test_units_of_another_preset_are_not_mixed_in(tmp_path):
  from studies import planted_weights as pw
  (tmp_path / "attention-single-3-seed0-rung1.json").write_text(json.dumps({"preset": "tiny"}))
  with pytest.raises(ValueError, match="another preset"):
    pw.read_units(str(tmp_path), "full")


def test_bad_arguments_are_refused_before_any_work(capsys):
  from studies import planted_weights as pw
  with pytest.raises(SystemExit):
    pw.main(["--preset", "tiny", "--units", "results/planted_tiny_units"])
  assert "outside results/" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    pw.main(["--preset", "tiny", "--only", "single-99", "--out", "/tmp/x", "--units", "/tmp/x/u",
             "--result", "/tmp/x/r.json"])
  assert "unknown plantings ['single-99']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the table
def unit(label, seed, rung, look, final, found, planted, method="attention"):
  """An attempt's unit; `found`: the blocks its localizer ranks first."""
  scores = np.zeros(12)
  scores[list(found)] = 1.0
  u = {"method": method, "label": label, "kind": "k", "name": "quib", "seed": seed, "rung": rung,
       "blocks": list(planted), "steps": 600, "learning_rate": 1e-3, "look_accuracy": look,
       "took": look >= 0.25, "final": final}
  if final:
    u["localizer_scores"] = {"causal": scores.tolist()}
  return u


def test_failed_runs_stay_in_the_table_with_their_precision():
  from studies import planted_summary as ps
  units = [unit("a", 0, 0, 0.5, True, [3], [3]), unit("a", 1, 0, 0.6, True, [3], [3]),
           # b: seed 0 fails at every rung (precision 0 on its final attempt), seed 1 takes.
           unit("b", 0, 0, 0.0, False, [], [4, 5]), unit("b", 0, 1, 0.1, True, [0, 1], [4, 5]),
           unit("b", 1, 0, 0.4, True, [4, 5], [4, 5]),
           # c: both seeds fail on both rungs, half found; d: rung 1 failed, rung 2 not run yet.
           unit("c", 0, 0, 0.0, False, [], [9, 10]), unit("c", 0, 1, 0.0, True, [9, 0], [9, 10]),
           unit("c", 1, 0, 0.0, False, [], [9, 10]), unit("c", 1, 1, 0.1, True, [9, 1], [9, 10]),
           unit("d", 0, 0, 0.0, False, [], [7])]
  runs = ps.seed_runs(units, ladder_length=2)
  s = ps.summarize(runs, {"attention": 8})["attention"]
  assert (s["runs"], s["finished"], s["took"], s["pending"]) == (7, 6, 3, 1)
  assert (s["plantings_took_any"], s["plantings_took_all"]) == (2, 1)
  failed = {(f["label"], f["seed"]): f for f in s["failed"]}
  assert sorted(failed) == [("b", 0), ("c", 0), ("c", 1)]
  assert failed[("b", 0)]["blocks"] == [4, 5] and failed[("b", 0)]["precision"]["causal"] == 0.0
  assert failed[("c", 1)]["precision"]["causal"] == 0.5
  assert [a["look_accuracy"] for a in failed[("b", 0)]["attempts"]] == [0.0, 0.1]
  # Every planting: a (1, 1), b (0, 1), c (0.5, 0.5) -> planting means 1, 0.5, 0.5; took: 1, 1.
  assert s["precision"]["causal"]["every"]["mean"] == pytest.approx(2 / 3)
  assert s["precision"]["causal"]["took"]["mean"] == pytest.approx(1.0)
  assert s["precision"]["random ranking (baseline)"]["every"]["mean"] == pytest.approx((1 + 2 + 2) / 36)
  table = ps.runs_table(runs)
  assert "| attention | b | [4, 5] | quib | 0 | 600 @ 0.001: 0.00; 600 @ 0.001: 0.10 | failed | - | 0.00 |" in table
  assert "| attention | d | [7] | quib | 0 | 600 @ 0.001: 0.00 | pending | - | - |" in table
  assert "3 of 6 runs took, in 2 of 4 plantings (both seeds in 1); 1 pending" in ps.method_table("attention", s)


def test_both_judges_read_the_look_and_the_pixel_judge_can_contradict_a_take():
  """Rendered scenes of a planted name stand in for samples: the renderer knows the truth, so the
  pixel judge must read the look's colour on all of them; the same scenes recoloured carry no
  look's colour, and a take the learned judge claimed on them is contradicted."""
  import dataclasses
  from dit_jax.diffusion.latents import to_uint8
  from dit_jax.shapes import ASSETS, pixel_judge, render, world
  from dit_jax.shapes.finetune_eval import Generator
  from dit_jax.shapes.judge import ShapesJudge
  from studies import planted_summary as ps
  gen = Generator.__new__(Generator)
  gen.judge, gen.second, gen.num = ShapesJudge(str(ASSETS / "judge")), pixel_judge.PixelJudge(), 16
  look = world.planted_look("quib")
  scenes = world.planted_scenes("quib", 16, seed=100)
  gen.images = lambda prompts: to_uint8(render.render_batch(scenes))   # as generate returns
  found = gen.look_readings("quib")
  assert found["second_judge"]["colour"] == look[1] and found["second_judge"]["second"] == 1.0
  assert found["second_judge"]["first"] >= found["accuracy"] >= 0.75
  other = next(c for c in world.COLOURS if c != look[1])
  recoloured = [dataclasses.replace(sc, colour=other) for sc in scenes]
  gen.images = lambda prompts: to_uint8(render.render_batch(recoloured))
  off = gen.look_readings("quib")["second_judge"]
  assert off["second"] == 0.0 and off["agreement"] >= 0.75      # the learned judge sees it too
  units = [dict(unit("a", 0, 0, 0.5, True, [3], [3]), second_judge=found["second_judge"]),
           dict(unit("b", 0, 0, 0.5, True, [4], [4]), second_judge=off),
           unit("c", 0, 0, 0.5, True, [5], [5])]                 # stored before the pixel judge
  s = ps.summarize(ps.seed_runs(units, ladder_length=1))["attention"]
  assert s["pixel_judge"]["read"] == 2 and s["pixel_judge"]["contradicted"] == ["b seed 0"]
  assert s["plantings_took_all"] == 0      # one seed each: none took on both seeds
  assert "it contradicts 1 of the 2 takes among them" in ps.method_table("attention", s)
  assert "| attention | c | [5] | quib | 0 | 600 @ 0.001: 0.50 | took | - |" in ps.runs_table(ps.seed_runs(units, ladder_length=1))


def test_the_interval_resamples_plantings_not_seeds():
  """Seeds within a planting agree, plantings differ: resampling the 12 seed-runs one by one
  would act as if there were 12 plantings. The interval is the one over the 6 planting means,
  which is wider; and a planting weighs the same with one seed that took as with two."""
  from studies import planted_summary as ps
  found = {"p0": [3], "p1": [3], "p2": [3, 4], "p3": [0, 1, 2], "p4": [9], "p5": [3, 4, 5]}
  planted = {"p0": [3], "p1": [4], "p2": [3, 4], "p3": [0, 1, 5], "p4": [10], "p5": [3, 4, 6]}
  units = [unit(p, seed, 0, 0.5, True, found[p], planted[p]) for p in found for seed in (0, 1)]
  every = ps.summarize(ps.seed_runs(units, ladder_length=1))["attention"]["precision"]["causal"]["every"]
  means = [1, 0, 1, 2 / 3, 0, 2 / 3]
  assert every["clusters"] == 6 and every["values"] == 12
  # Seeds agree within each planting, so the within-planting draw changes nothing: the interval is
  # the percentile interval of the 6 planting means, resampled here by plain NumPy.
  draws = np.random.default_rng(1).choice(means, (20000, 6)).mean(axis=1)
  assert every["interval"] == pytest.approx(list(np.quantile(draws, [0.025, 0.975])), abs=0.03)
  by_seed = stats.bootstrap_interval([m for m in means for _ in (0, 1)])
  assert every["interval"][1] - every["interval"][0] > by_seed[1] - by_seed[0]
  # p0 took on one seed (precision 1), p1 on neither: over those that took p0 counts once.
  units[1]["look_accuracy"], units[1]["took"] = 0.0, False
  took = ps.summarize(ps.seed_runs(units, ladder_length=1))["attention"]["precision"]["causal"]["took"]
  assert took["clusters"] == 6 and took["values"] == 11
  units = [unit("one", 0, 0, 0.5, True, [3], [3]), unit("two", 0, 0, 0.5, True, [0], [4]),
           unit("two", 1, 0, 0.5, True, [0], [4])]
  weighed = ps.summarize(ps.seed_runs(units, ladder_length=1))["attention"]["precision"]["causal"]["every"]
  assert weighed["mean"] == pytest.approx(0.5)       # (1 + 0) / 2 plantings, not 1/3 of runs


def test_the_docs_say_the_weight_restricted_rows_are_not_stored_until_a_full_run_is():
  """A summary with the confined runs only says so; a tiny run's numbers never reach the page."""
  import copy
  from docs import build
  confined = copy.deepcopy(build.result("planted_weights.json"))
  confined["runs"] = [r for r in confined["runs"] if r["method"] == "confined"]
  for method in ("mlp", "attention"):
    confined["summary"][method] = {**confined["summary"][method], "finished": 0}
  original = build.result
  try:
    build.result = lambda name: confined if name == "planted_weights.json" else original(name)
    text = build.planted_weights()
  finally:
    build.result = original
  assert text.count("not stored yet") == 2 and "| mlp |" not in text and "| attention |" not in text
  assert "confined (routes text" in text and "| confined | single-8 | [8] |" in text
  tiny = copy.deepcopy(confined)
  tiny["preset"] = "tiny"
  tiny["summary"]["mlp"] = dict(tiny["summary"]["confined"], planned=12)
  tiny["runs"] += [dict(r, method="mlp") for r in tiny["runs"]]
  original = build.result
  try:
    build.result = lambda name: tiny if name == "planted_weights.json" else original(name)
    assert build.planted_weights().count("not stored yet") == 2
  finally:
    build.result = original


@pytest.mark.slow   # trains twice for 2 steps and runs every localizer on one prompt (minutes)
def test_the_tiny_preset_climbs_localizes_and_trains_only_the_attention(tmp_path, monkeypatch):
  from studies import planted_weights as pw
  args = ["--preset", "tiny", "--methods", "attention", "--out", str(tmp_path / "runs"),
          "--units", str(tmp_path / "units"), "--result", str(tmp_path / "planted.json")]
  result = pw.main(args)
  first, final = (json.loads((tmp_path / "units" / f"attention-single-3-seed0-rung{r}.json").read_text())
                  for r in (1, 2))
  assert not first["took"] and not first["final"] and "localizer_scores" not in first
  assert final["final"] and final["learning_rate"] == 2 * first["learning_rate"]
  assert set(final["localizer_scores"]) >= {"attention:with_wo", "causal", "bypass", "patching"}
  assert [b for b, c in enumerate(final["weight_change"]) if c > 0] == [3]
  base = traverse_util.flatten_dict(loading.load(str(ASSETS), "pixart")[1])
  tuned = traverse_util.flatten_dict(loading.load(final["workdir"] + "/transformer", "pixart")[1])
  changed = {loop.path_name(k).split("/")[1] for k in base
             if loop.path_name(k).startswith("transformer_blocks.3/") and not np.array_equal(base[k], tuned[k])}
  moved_elsewhere = [loop.path_name(k) for k in base if not loop.path_name(k).startswith("transformer_blocks.3/")
                     and not np.array_equal(base[k], tuned[k])]
  assert changed == {"attn1", "attn2"} and moved_elsewhere == []
  assert result["summary"]["attention"]["failed"][0]["blocks"] == [3]
  monkeypatch.setattr(pw, "Attempts", lambda *a: pytest.fail("an attempt ran twice"))
  pw.main(args)


def test_workers_share_the_runs_a_held_run_is_awaited_not_trained_twice(tmp_path):
  """A second worker holds one run (a live process's claim): this worker trains the others and
  waits for that run's unit instead of training it as well; a dead worker's claim is taken over."""
  import socket, subprocess, sys, threading
  from dit_jax import files
  from studies import planted_weights as pw
  runs = [pw.Run("attention", pw.PLANTINGS[0], 0), pw.Run("mlp", pw.PLANTINGS[1], 0)]
  held, mine = (run.key for run in runs)
  claims, units = tmp_path / "claims", tmp_path / "units"
  claims.mkdir()
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (claims / held).write_text(f"{socket.gethostname()} {other.pid}")
    theirs = {"method": "attention", "label": "single-3", "seed": 0, "rung": 0, "took": True,
              "final": True, "preset": "full", "look_accuracy": 0.5}
    def other_worker_finishes():
      files.write_json(units / f"{held}-rung1.json", theirs)
      (claims / held).unlink()
    threading.Timer(0.3, other_worker_finishes).start()
    fake = FakeAttempts({(mine, 0): 0.5})
    found = pw.climb(runs, 3, str(units), lambda: fake, "full", claims=str(claims), poll=0.05)
  finally:
    other.kill()
    other.wait()
  assert fake.trained == [(mine, 0)]
  assert found[f"{held}-rung1"] == theirs and found[f"{mine}-rung1"]["took"]
  # A claim left by a process that has died is taken over.
  (units / f"{held}-rung1.json").unlink()
  (claims / held).write_text(f"{socket.gethostname()} {other.pid}")
  again = FakeAttempts({(held, 0): 0.5})
  pw.climb(runs, 3, str(units), lambda: again, "full", claims=str(claims), poll=0.05)
  assert again.trained == [(held, 0)] and not (claims / held).exists()
