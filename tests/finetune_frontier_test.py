"""studies/finetune_frontier.py (with studies/frontier.py and studies/frontier_report.py): localized
fine-tuning against its controls at matched preservation, on constructed numbers."""
import json

import numpy as np
import pytest

from studies import finetune_frontier as ff
from studies import frontier, paired
from studies import frontier_report as report


# ------------------------------------------------------------------- frontier and interpolation
def test_success_is_read_off_the_pareto_polyline():
  points = [(0.90, 0.10), (0.88, 0.50), (0.85, 0.40), (0.80, 0.70), (0.70, 0.65)]
  # (0.85, 0.40) and (0.70, 0.65) are dominated: another point has more preservation and success.
  assert frontier.pareto(points) == [(0.90, 0.10), (0.88, 0.50), (0.80, 0.70)]
  # By hand: between (0.88, 0.50) and (0.80, 0.70), 3/8 of the way from 0.88 to 0.80.
  assert frontier.success_at(points, 0.85) == pytest.approx(0.50 + 0.20 * 0.03 / 0.08)
  assert frontier.success_at(points, 0.89) == pytest.approx(0.10 + 0.40 * 0.01 / 0.02)
  assert frontier.success_at(points, 0.88) == pytest.approx(0.50)      # on a point
  assert frontier.success_at(points, 0.75) == pytest.approx(0.70)      # past the last: flat
  assert frontier.success_at(points, 0.95) is None                     # never reached


def run(variant, concept, seed, rate, points, objective="ablation"):
  return {"objective": objective, "variant": variant, "concept": concept, "seed": seed,
          "learning_rate": rate, "curve": [{"step": step, "success": s, "preservation": p, "fidelity": f}
                                           for step, (p, s, f) in zip((1, 2), points)]}


# Each rate's two measured steps as (preservation, success, fidelity); the base model: 0.90, 0.0.
LOCAL = {1e-3: [(0.89, 0.40, 0.99), (0.86, 0.60, 0.98)], 3e-3: [(0.80, 0.80, 0.95), (0.75, 0.85, 0.9)]}
FULL = {1e-3: [(0.88, 0.20, 0.99), (0.85, 0.30, 0.97)], 3e-3: [(0.82, 0.50, 0.95), (0.78, 0.60, 0.9)]}
REPORTED = ["a", "b", "c", "d", "e", "f"]


def constructed(held_out=("h",), reported=REPORTED, seeds=(0, 1, 2)):
  units = [run(v, c, s, rate, pts) for c in (*held_out, *reported) for s in seeds
           for v, table in (("localized", LOCAL), ("full", FULL)) for rate, pts in table.items()]
  bases = [{"objective": "ablation", "variant": "base model", "concept": c, "success": 0.0,
            "preservation": 0.90} for c in (*held_out, *reported)]
  return units, bases


def test_matched_difference_and_operating_point_on_constructed_runs():
  units, bases = constructed()
  s = report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3])["ablation"]
  # Tuning on "h": mean loss within the 0.05 margin at lr 1e-3 (0.01 and 0.04 for localized), the
  # larger success there is step 2's; both rates are reported.
  assert s["variants"]["localized"]["operating"] == {"rate": 1e-3, "step": 2}
  assert s["variants"]["full"]["operating"] == {"rate": 1e-3, "step": 2}     # losses 0.02, 0.05
  assert s["variants"]["localized"]["rates"] == [1e-3, 3e-3]
  versus = s["localized_minus"]["full"]
  # By hand, at a loss of 0.05 (preservation 0.85): localized 0.60 + 0.20 * 0.01 / 0.06, full 0.30.
  assert versus["matched"]["0.05"]["mean"] == pytest.approx(0.60 + 0.2 / 6 - 0.30)
  # At 0.02 (0.88): localized 0.40 + 0.20 * 0.01 / 0.03; full on its point (0.88, 0.20).
  assert versus["matched"]["0.02"]["mean"] == pytest.approx(0.40 + 0.2 / 3 - 0.20)
  # At 0.10 (0.80): localized's point (0.80, 0.80); full between (0.82, 0.5) and (0.78, 0.6).
  assert versus["matched"]["0.1"]["mean"] == pytest.approx(0.80 - 0.55)
  # At the operating point (lr 1e-3, step 2): success 0.60 - 0.30, preservation 0.86 - 0.85.
  assert versus["operating"]["success"]["mean"] == pytest.approx(0.30)
  assert versus["operating"]["preservation"]["mean"] == pytest.approx(0.01)
  assert versus["operating"]["fidelity"]["mean"] == pytest.approx(0.01)
  assert versus["matched"]["0.05"]["concepts"] == 6 and versus["matched"]["0.05"]["pairs"] == 18
  assert report.words(versus["matched"]["0.05"], "success") == "higher"
  text = report.table({"ablation": s}) + report.claims({"ablation": s})
  assert "| full | 0.27 [0.27, 0.27] (higher)" in text


# ------------------------------------------------------------------------- cluster bootstrap
def test_the_bootstrap_resamples_concepts_then_seeds():
  # One concept of six carries the whole effect, on each of its five seeds.
  values = {c: [1.0 if c == "a" else 0.0] * 5 for c in "abcdef"}
  found = frontier.cluster_bootstrap(values)
  assert found["mean"] == pytest.approx(1 / 6) and found["concepts"] == 6 and found["pairs"] == 30
  # A third of the resamples draw no "a" (5/6)^6: the interval reaches 0, so nothing is shown...
  assert found["interval"][0] == 0.0 and not paired.with_margin(found, 0.05, "concepts").startswith("higher")
  # ...where the 30 pairs resampled on their own would claim an effect (a draw without any of the
  # five ones is (25/30)^30 = 0.4 % likely).
  assert paired.interval([v for vs in values.values() for v in vs])[0] > 0
  # Seeds are resampled within each concept: every concept's mean is 0.5, yet the interval is not
  # a point.
  spread = frontier.cluster_bootstrap({c: [0.0, 1.0] for c in "abcdef"})
  assert spread["mean"] == 0.5 and spread["interval"][1] - spread["interval"][0] > 0.1
  # Concepts weigh equally, whatever their number of seeds.
  assert frontier.cluster_bootstrap({"a": [1.0] * 9, "b": [0.0]})["mean"] == 0.5


# ------------------------------------------------------------------------- one rule for all
def mirrored(words: str) -> str:
  swap = {"higher": "lower", "lower": "higher"}
  return " ".join(swap.get(w.strip(","), w.strip(",")) + ("," if w.endswith(",") else "")
                  for w in words.split())


@pytest.mark.parametrize("interval", [(-0.12, 0.07), (-0.03, -0.004), (0.02, 0.17), (-0.03, 0.21),
                                      (-0.04, 0.04), (0.01, 0.3), (-0.2, -0.1), (-0.01, 0.2)])
def test_one_symmetric_rule_for_every_comparison(interval):
  row = {"mean": sum(interval) / 2, "interval": list(interval), "concepts": 6}
  said = paired.with_margin(row, 0.05, "concepts")
  # Swapping localized and the control mirrors the words.
  swapped = {**row, "interval": [-interval[1], -interval[0]]}
  assert paired.with_margin(swapped, 0.05, "concepts") == mirrored(said)
  # Success and preservation get the same words for the same numbers (one rule, each its margin).
  assert report.words(row, "success") == report.words(row, "preservation") == said


def test_an_unresolved_loss_is_not_called_no_loss():
  """The earlier rule said "supported" on a preservation of -0.03 [-0.12, 0.07] (no difference
  shown counted as no loss) while a certain -0.017 [-0.03, -0.004] blocked the claim."""
  wide = {"mean": -0.03, "interval": [-0.12, 0.07], "concepts": 6}
  small = {"mean": -0.017, "interval": [-0.03, -0.004], "concepts": 6}
  assert paired.with_margin(wide, 0.05, "concepts") == "no difference shown"
  assert not paired.non_inferior(wide, 0.05)
  assert paired.with_margin(small, 0.05, "concepts") == "lower, by less than 0.05"
  assert paired.non_inferior(small, 0.05)
  assert paired.with_margin({**small, "concepts": 5}, 0.05, "concepts") == "too few concepts to say (< 6)"


def test_the_headline_needs_more_success_than_both_block_controls():
  units, bases = constructed()
  for variant, table in (("random-K", FULL), ("bottom-K", LOCAL)):      # bottom-K ties localized
    units += [run(variant, c, s, rate, pts) for c in ("h", *REPORTED) for s in (0, 1, 2)
              for rate, pts in table.items()]
  said = report.claims(report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3]))
  assert "Not shown: that for ablation the blocks localization picks" in said
  assert "not higher for bottom-K." in said
  assert "more success than random-K" in said
  units = [u for u in units if u["variant"] != "bottom-K"]
  units += [run("bottom-K", c, s, rate, pts) for c in ("h", *REPORTED) for s in (0, 1, 2)
            for rate, pts in FULL.items()]
  said = report.claims(report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3]))
  assert "Supported: that for ablation the blocks localization picks" in said


# ------------------------------------------------------------------------------ second judge
class Reader:
  """A judge that reads each prompt's named concepts back, except where told to misread."""

  def __init__(self, misread=None):
    self.misread = misread or {}      # prompt index in a call -> {category: name}
    self.prompts = None

  def predictions(self, images):
    from dit_jax.shapes import world
    from dit_jax.shapes.classifier import HeadPrediction
    from dit_jax.shapes.judge import named_concepts
    heads = {}
    for category, classes in world.CONCEPTS.items():
      names = []
      for i in images:            # an "image" is its prompt's index in gen.shown
        named = named_concepts(Shown.prompts[i])
        read = self.misread.get(Shown.prompts[i], {}).get(category, named.get(category, classes[0]))
        names.append(classes.index(read))
      heads[category] = HeadPrediction(np.array(names), None, tuple(classes))
    return heads


class Shown:
  prompts: list = []


def test_both_judges_read_every_measured_image_and_their_disagreements_are_counted():
  from dit_jax.shapes import world
  from dit_jax.shapes.finetune_eval import Generator

  class Gen:
    num = 16
    naming_prompts = Generator.naming_prompts
    unrelated_prompts = Generator.unrelated_prompts

    def images(self, prompts):
      start = len(Shown.prompts)
      Shown.prompts += prompts
      return np.arange(start, start + len(prompts))

  Shown.prompts = []
  gen = Gen()
  success = gen.naming_prompts("colour", ["red"])
  # The learned judge reads the red prompts as blue on 4 images of 16; the pixel judge on 8.
  gen.judge = Reader({p: {"colour": "blue"} for p in success[:4]})
  gen.second = Reader({p: {"colour": "blue"} for p in success[:8]})
  row = ff.measure(gen, "personalization", "colour", "red", None)
  assert row["success"] == pytest.approx(4 / 16)            # RELOOK_TARGET["colour"] is blue
  both = row["second_judge"]
  assert both["success"] == {"first": pytest.approx(4 / 16), "second": pytest.approx(8 / 16)}
  assert both["agreement"]["success"] == pytest.approx(12 / 16)
  assert both["categories"] == ["position", "place"] and both["agreement"]["preserved"] == 1.0
  # A category the pixel judge cannot read gets no second success, only its preservation.
  Shown.prompts = []
  gen.judge, gen.second = Reader(), Reader()
  row = ff.measure(gen, "ablation", "shape", "circle", None)
  assert row["success"] == 0.0 and "success" not in row["second_judge"]
  assert row["second_judge"]["categories"] == ["colour", "position", "place"]


def test_the_report_says_where_the_two_judges_words_differ():
  units, bases = constructed()
  for u in units:
    for p in u["curve"]:
      # The pixel judge agrees on preservation, and sees no success difference between variants.
      p["second_judge"] = {"success": {"first": p["success"], "second": 0.5},
                           "preserved_accuracy": {"first": p["preservation"], "second": p["preservation"]},
                           "agreement": {"success": 0.75, "preserved": 0.9}}
  s = report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3])
  versus = s["ablation"]["localized_minus"]["full"]["operating"]
  assert versus["success, learned judge"]["mean"] == pytest.approx(0.30)
  assert versus["success, pixel judge"]["mean"] == 0.0
  said = report.claims(s)
  assert "The two judges' words differ on success against full." in said
  text = report.table(s)
  assert "Read again by the pixel judge" in text
  assert "| localized | 0.60 [0.60, 0.60] | 0.50 [0.50, 0.50]" not in text   # column order: SECOND
  assert "| localized | 0.50 [0.50, 0.50] | 0.60 [0.60, 0.60] |" in text
  assert s["ablation"]["variants"]["full"]["operating_values"]["agreement, success"]["mean"] == 0.75


# --------------------------------------------------------------------------------- the design
def test_random_k_is_drawn_apart_from_top_k_and_bottom_k():
  rankings = ff.block_rankings()
  for category, concept in (*ff.REPORTED, *ff.HELD_OUT):
    ranking = rankings[concept]
    top = ff.variant_blocks("localized", ranking, concept, 0)
    bottom = ff.variant_blocks("bottom-K", ranking, concept, 0)
    assert top == sorted(ranking[:ff.K]) and bottom == sorted(ranking[-ff.K:])
    draws = [ff.variant_blocks("random-K", ranking, concept, seed) for seed in range(10)]
    for draw in draws:
      assert len(set(draw)) == ff.K and not set(draw) & set(top) and not set(draw) & set(bottom)
    assert len({tuple(d) for d in draws}) > 1                               # a new draw per seed
    assert draws[3] == ff.variant_blocks("random-K", ranking, concept, 3)   # and reproducible
  # Per concept: each has its own top-K (the stored scores rank them differently).
  assert len({tuple(ff.variant_blocks("localized", rankings[c], c, 0)) for _, c in ff.REPORTED}) > 1


def test_tuning_concepts_are_never_reported():
  for preset in ff.PRESETS.values():
    assert not set(preset["held_out"]) & set(preset["reported"])
  with pytest.raises(ValueError, match="would tune the rates and be reported"):
    ff.check_design(ff.REPORTED, ff.REPORTED[:1])
  # The rates follow the held-out concept alone: reported runs that favour another rate change nothing.
  units, bases = constructed()
  for u in units:
    if u["concept"] != "h" and u["learning_rate"] == 1e-3:
      u["curve"][-1]["success"] = 0.0
  s = report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3])["ablation"]
  assert s["variants"]["localized"]["operating"] == {"rate": 1e-3, "step": 2}
  assert "h" not in s["concepts"] and s["concepts"] == REPORTED


def test_tuning_falls_back_to_the_smallest_loss_and_brackets_the_rate():
  units, bases = constructed()
  for u in units:      # every held-out point loses more than the margin
    for p in u["curve"]:
      p["preservation"] -= 0.2
  tuned = report.tune([u for u in units if u["concept"] == "h"], {b["concept"]: b for b in bases},
                      ["h"], [1e-3, 3e-3])
  assert tuned["localized"]["operating"] == {"rate": 1e-3, "step": 1}
  assert tuned["localized"]["rates"] == [1e-3, 3e-3]


def test_personalization_data_draws_the_target_under_the_concepts_name(tmp_path):
  from dit_jax.shapes import data, render, world
  drawn_priors = []

  def frozen(captions):      # the frozen model's prior images (their content does not matter here)
    drawn_priors.append(captions)
    return np.zeros((len(captions), 32, 32, 3), np.uint8)

  encode = lambda captions: (np.zeros((len(captions), 4, 8)), np.ones((len(captions), 4)))
  batches = data.relook_batches(encode, frozen, "colour", "red", "blue", 4, 3, 0, str(tmp_path))
  scenes = world.concept_scenes("colour", "red", 4, 0)
  assert all(" red " in world.caption(s) for s in scenes)
  drawn = np.stack([render.render(world.with_concept(s, "colour", "blue")) for s in scenes])
  assert np.array_equal(batches.main["x0"], drawn)
  # The prior: neutral captions (the colour taken out), drawn once for the concept and seed.
  assert not any("red" in c for c in drawn_priors[0]) and len(drawn_priors[0]) == 3
  data.relook_batches(encode, frozen, "colour", "red", "blue", 4, 3, 0, str(tmp_path))
  assert len(drawn_priors) == 1
  with pytest.raises(ValueError, match="another concept of 'colour'"):
    data.relook_batches(encode, frozen, "colour", "red", "red", 4, 3, 0)


def test_the_plan_and_bad_input_say_what_is_wrong(tmp_path, capsys):
  assert ff.main(["--plan"])["runs"] == ff.plan(ff.PRESETS["full"])["runs"]
  with pytest.raises(SystemExit):
    ff.main(["--preset", "tiny"])                     # would write tiny output into results/
  assert "would write into results/" in capsys.readouterr().err
  with pytest.raises(SystemExit, match="no stored units"):
    ff.main(["--preset", "tiny", "--rescore", "--units", str(tmp_path / "none"),
             "--result", str(tmp_path / "r.json")])
  bad = tmp_path / "scores.json"
  bad.write_text(json.dumps({"scores": {"zork": {"with_wo": list(range(12))}}}))
  with pytest.raises(KeyError, match="no with_wo scores for"):
    ff.run(ff.PRESETS["tiny"], str(tmp_path / "u"), str(tmp_path / "o"), str(bad))


def test_the_docs_region_follows_the_stored_summary(monkeypatch, tmp_path):
  from docs import build

  def absent(name):
    raise FileNotFoundError(name)
  monkeypatch.setattr(build, "result", absent)
  said = build.finetune_frontier()
  assert said.startswith("Not yet stored: the matched-preservation table")
  assert "[" not in said                       # no interval, old or new, is shown as the comparison
  units, bases = constructed()
  stored = {"preset": "full", "k": ff.K, "rates": [1e-3, 3e-3], "steps": 2, "measured": [1, 2],
            "tuning_rule": ff.TUNING_RULE, "margin": ff.MARGIN, "primary_level": ff.PRIMARY_LEVEL,
            "summary": report.summarize(units, bases, ["h"], REPORTED, [1e-3, 3e-3])}
  monkeypatch.setattr(build, "result", lambda name: stored)
  said = build.finetune_frontier()
  assert "| localized | 0.001, 0.003 | lr 0.001, step 2 | 36 |" in said
  assert "What this supports:" in said and "a check that the study runs" not in said
  monkeypatch.setattr(build, "result", lambda name: {**stored, "preset": "tiny"})
  assert "From the tiny preset: a check that the study runs, not the comparison." in build.finetune_frontier()
  # One objective finished, the other still running: named with its count, never summarized.
  for name in ("ablation_red_base", "ablation_red_full_seed0_lr0.001", "ablation_red_localized_seed0_lr0.001"):
    (tmp_path / "finetune_frontier_runs").mkdir(exist_ok=True)
    (tmp_path / "finetune_frontier_runs" / f"{name}.json").write_text("{}")
  monkeypatch.setattr(build, "RESULTS", str(tmp_path))
  planned = ff.runs_per_objective(ff.PRESETS["full"])
  monkeypatch.setattr(build, "result", lambda name: {
      **stored, "runs": {"personalization": {"stored": planned, "planned": planned}}})
  assert (f"Objectives summarized: personalization, {planned} of {planned} runs. Not summarized yet: "
          f"ablation (2 of {planned} runs stored; the same command resumes it)." in build.finetune_frontier())


@pytest.mark.slow   # four 2-step fine-tunings of the Shapes model, each measured at 2 steps
def test_the_tiny_preset_runs_end_to_end_and_resumes(tmp_path, monkeypatch):
  args = ["--preset", "tiny", "--units", str(tmp_path / "units"), "--out", str(tmp_path / "runs"),
          "--result", str(tmp_path / "frontier.json")]
  result = ff.main(args)
  stored = sorted(p.name for p in (tmp_path / "units").iterdir())
  assert stored == [f"personalization_{name}.json" for name in (
      "green_base", "green_localized_seed0_lr0.001", "green_random-K_seed0_lr0.001", "zork_base",
      "zork_localized_seed0_lr0.001", "zork_random-K_seed0_lr0.001")]
  unit = json.loads((tmp_path / "units" / "personalization_zork_random-K_seed0_lr0.001.json").read_text())
  assert [p["step"] for p in unit["curve"]] == [1, 2] and unit["role"] == "reported"
  assert not set(unit["blocks"]) & set(ff.variant_blocks("localized", ff.block_rankings()["zork"], "zork", 0))
  assert 0 <= unit["curve"][-1]["fidelity"] <= 1
  assert not (tmp_path / "runs" / "personalization_zork_random-K_seed0_lr0.001" / "checkpoints").exists()
  assert len(list((tmp_path / "runs" / "prior_cache").iterdir())) == 2     # one prior per concept and seed
  summary = result["summary"]["personalization"]
  assert summary["concepts"] == ["zork"] and set(summary["localized_minus"]) == {"random-K"}
  assert (tmp_path / "frontier.png").is_file()
  monkeypatch.setattr(ff.Runner, "train_and_measure", lambda *a: pytest.fail("trained twice"))
  assert ff.main(args)["summary"] == result["summary"]


# ------------------------------------------------------------------------------------ workers
def test_a_claimed_unit_is_run_once_and_awaited_by_the_other_worker(tmp_path):
  """Two workers share the units: a unit another live process holds is neither run nor lost
  (every() waits for its JSON); a claim left by a dead process is taken over."""
  import subprocess, sys, threading
  from dit_jax import files
  runner = ff.Runner(ff.PRESETS["tiny"], str(tmp_path / "units"), str(tmp_path / "out"), {})
  claims = tmp_path / "out" / "claims"
  claims.mkdir(parents=True)
  other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    (claims / "held").write_text(f"{__import__('socket').gethostname()} {other.pid}")
    made = []
    assert runner.stored("held", lambda: made.append(1) or {"x": 1}) is None and not made
    later = threading.Timer(0.2, lambda: files.write_json(tmp_path / "units" / "held.json", {"x": 2}))
    later.start()
    assert runner.every([lambda: runner.stored("held", lambda: made.append(1) or {"x": 1})],
                        poll=0.05) == [{"x": 2}]
    assert not made                      # the other worker's result, not a second run
  finally:
    other.kill()
    other.wait()
  (claims / "stale").write_text(f"{__import__('socket').gethostname()} {other.pid}")   # now dead
  assert runner.stored("stale", lambda: {"x": 3}) == {"x": 3}
  assert not (claims / "stale").exists()     # released once the unit is stored
  with files.claimed(claims / "mine") as mine:
    with files.claimed(claims / "mine") as again:
      assert mine and not again


def test_a_difference_needs_every_one_of_six_concepts_to_say_higher():
  """Five concepts gain 0.3, one loses 0.01: the cluster bootstrap the words used before called it
  "higher" (a resample without five of the six gainers is rare); under the null that each
  concept's sign is a coin flip, 2 of the 64 patterns are at least this extreme (p = 1/32 > 0.025),
  so the exact interval keeps 0."""
  gains = {c: 0.3 for c in "abcde"} | {"f": -0.01}
  def row(value):
    return {"frontier": {lv: value for lv in ff.LEVELS},
            "operating": {m: None for m in (*report.MEASURES, *report.SECOND)}}
  local = {(c, s): row(gains[c]) for c in gains for s in (0, 1, 2)}
  control = {(c, s): row(0.0) for c in gains for s in (0, 1, 2)}
  found = report.localized_minus(local, control)["matched"]["0.05"]
  assert found["interval"] == pytest.approx([-0.01, 0.3]) and found["concepts"] == 6
  assert report.words(found, "success") == "no difference shown; not lower by more than 0.05"
  assert report.words(frontier.cluster_bootstrap(report.differences(
      local, control, lambda r: r["frontier"][0.05])), "success") == "higher"
  calibration = report.calibration(local, control)["0.05"]
  assert calibration["exact sign-flip"]["false_positive"] <= 2 / 64
  assert calibration["cluster bootstrap"]["false_positive"] > 0.05
