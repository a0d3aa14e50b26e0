"""The GPU benchmarks' harnesses, run at their tiny CPU presets: they must measure the right thing."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.pixart_test import REPO


def run(script: str, *args: str, out) -> dict:
  subprocess.run([sys.executable, f"benchmarks/{script}", *args, "--out", str(out)], cwd=REPO, check=True,
                 capture_output=True)
  with open(out) as f:
    return json.load(f)


@pytest.mark.slow
def test_sweep_benchmark_times_a_sweep_that_equals_diffusers_when_it_swaps_nothing(tmp_path):
  result = run("sweep.py", "--preset", "tiny", "--steps", "3", "--iters", "1", "--dtype", "float32",
               out=tmp_path / "sweep.json")
  assert result["interventions"] == 4          # one per block of the tiny PixArt
  assert result["no_op_sweep_rel_error_vs_diffusers"] < 1e-4
  assert result["flax"]["images_per_s"] > 0 and result["diffusers"]["images_per_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pixart", "flux"])
def test_finetune_benchmark_localized_step_holds_less_state(model):
  from benchmarks import finetune_step
  blocks = finetune_step.LOCALIZED[(model, "tiny")]
  rows = {variant: finetune_step.run_variant(model, "tiny", variant, blocks, batch=2, dtype="float32",
                                             steps=1)
          for variant in ("localized", "full")}
  assert rows["localized"]["trainable_parameters"] < rows["full"]["trainable_parameters"]
  # Gradient + Adam state is proportional to the trainable parameters (float32: 3 x 4 bytes each).
  for r in rows.values():
    assert r["grad_and_optimizer_bytes"] == pytest.approx(12 * r["trainable_parameters"], rel=0.01)
  assert rows["localized"]["xla_plan_bytes"]["peak"] < rows["full"]["xla_plan_bytes"]["peak"]


@pytest.mark.slow
def test_run_all_runs_every_benchmark_end_to_end_at_the_tiny_preset(tmp_path):
  from benchmarks import run_all
  done = subprocess.run([sys.executable, "benchmarks/run_all.py", "--preset", "tiny", "--results",
                         str(tmp_path), "--budget-minutes", "30"], cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  summary = json.loads(next(tmp_path.glob("run_all_tiny_*.json")).read_text())
  assert [r["job"] for r in summary["rows"]] == [j.name for j in run_all.JOBS]
  for row in summary["rows"]:
    assert row["status"] == "ok" and "no summary" not in row["result"], row
    assert json.loads(open(row["json"]).read())      # each benchmark's own JSON
    assert row["job"] in done.stdout                  # and one printed table


def planted_row(name, look, precision_blocks, causal, variant="blocks"):
  scores = np.full(12, 0.1)
  scores[precision_blocks] = 1.0
  return {"name": name, "variant": variant, "planted_blocks": [1, 5, 9], "look_accuracy": look,
          "scores": scores.tolist(), "base_scores": np.full(12, 0.1).tolist(), "causal": causal}


def test_planted_benchmark_counts_a_set_only_when_the_planting_took():
  """Issue 19, item 7: look accuracy with a floor, and the causal check next to the precision."""
  from benchmarks import planted_knowledge as pk
  holds = {"original": 0.8, "planted": 0.1, "random": [0.7, 0.8, 0.75]}
  fails = {"original": 0.8, "planted": 0.6, "random": [0.5, 0.6]}
  rows = [planted_row("quib", 0.8, [1, 5, 9], holds), planted_row("vexa", 0.09, [1, 5, 9], holds),
          planted_row("nolo", 0.6, [0, 2, 9], fails), planted_row("quib", 0.7, [0, 2, 3], holds, "mlp")]
  result = pk.summarize(rows, look_floor=0.5)
  blocks, mlp = result["blocks"], result["mlp"]
  assert blocks["sets"] == 3 and blocks["counted"] == 2          # vexa's planting did not take
  assert blocks["mean_precision"] == pytest.approx((1 + 1 / 3) / 2)
  assert blocks["causal_holds"] == 1                             # quib yes, nolo no (random hurts too)
  assert rows[0]["causal_drop_planted"] == pytest.approx(0.7)
  assert rows[0]["causal_drop_random"] == pytest.approx(0.05)
  assert rows[1]["counted"] is False and rows[2]["causal_holds"] is False
  assert mlp["counted"] == 1 and mlp["mean_precision"] == 0.0 and mlp["causal_holds"] == 1


@pytest.mark.slow   # fine-tunes the Shapes model twice (2 steps each) and runs two sweeps
def test_planted_benchmark_harness_at_its_tiny_preset(tmp_path):
  from benchmarks import planted_knowledge as pk
  result_path = tmp_path / "planted.json"
  pk.main(["--preset", "tiny", "--sets", "1", "--out", str(tmp_path / "runs"),
           "--result", str(result_path)])
  with open(result_path) as f:
    result = json.load(f)
  assert [r["variant"] for r in result["sets"]] == ["blocks", "mlp"]
  for r in result["sets"]:
    causal = r["causal"]
    assert len(causal["random"]) == 2 and 0 <= causal["original"] <= 1
    assert not any(set(b) & set(r["planted_blocks"]) for b in causal["random_blocks"])
  selections = {}
  for variant in ("blocks", "mlp"):
    with open(tmp_path / "runs" / f"{variant}_quib_1-5-9_seed0_steps2" / "selection.json") as f:
      selections[variant] = json.load(f)
  assert selections["mlp"]["parts"] == ["ff"] and selections["blocks"]["parts"] == []
  assert selections["mlp"]["trainable_parameters"] < selections["blocks"]["trainable_parameters"]
  assert set(result["summary"]) == {"blocks", "mlp"}


def test_memory_plan_names_an_unknown_compile_target():
  """benchmarks/memory_plan.py --target: 'local' or a TPU generation compiled for without a TPU."""
  from benchmarks import memory_plan
  with pytest.raises(SystemExit, match=r"--target 'gpu': use 'local' or 'tpu:<generation>'"):
    memory_plan.target_device("gpu")
  assert memory_plan.target_device("local") is None
