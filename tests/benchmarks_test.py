"""The GPU benchmarks' harnesses, run at their tiny CPU presets: they must measure the right thing."""
import json
import subprocess
import sys

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
