"""The GPU benchmarks' harnesses, run at their tiny CPU presets: they must measure the right thing."""
import json
import os
import shutil
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


def test_memory_plan_names_an_unknown_compile_target():
  """benchmarks/memory_plan.py --target: 'local' or a TPU generation compiled for without a TPU."""
  from benchmarks import memory_plan
  with pytest.raises(SystemExit, match=r"--target 'gpu': use 'local' or 'tpu:<generation>'"):
    memory_plan.target_device("gpu")
  assert memory_plan.target_device("local") is None


# ---------------------------------------------------------------------------------------------
# Issue 28, part 3: analytic FLOPs, TFLOP/s and MFU in the stored results and the README.

RESULTS = os.path.join(REPO, "results")
# What benchmarks/run_all.py --recompute-flops adds; everything else is what the run wrote.
ADDED = {"analytic_gflop", "peak_tflops", "flops_recomputed", "analytic_tflops", "mfu", "result_recomputed"}


def without_added(value):
  if isinstance(value, dict):
    return {k: without_added(v) for k, v in value.items() if k not in ADDED}
  if isinstance(value, list):
    return [without_added(v) for v in value]
  return value


def test_stored_gpu_results_are_their_runs_plus_the_recomputed_flops(tmp_path):
  """The stored JSONs, stripped of the recomputed fields and recomputed, come back identical: the
  recomputation added fields and changed no measured figure, and the stored figures are current."""
  from benchmarks import run_all
  stored = {}
  for path in sorted(os.listdir(RESULTS)):
    if path.endswith("_full_gpu.json"):
      with open(os.path.join(RESULTS, path)) as f:
        stored[path] = json.load(f)
      (tmp_path / path).write_text(json.dumps(without_added(stored[path])))
  run_all.recompute_flops(str(tmp_path))
  for path, result in stored.items():
    assert json.loads((tmp_path / path).read_text()) == result, path
  forward, generate = stored["forward_pixart_full_gpu.json"], stored["generate_pixart_full_gpu.json"]
  assert forward["analytic_gflop"] == pytest.approx(13_019, rel=1e-4)   # torch's counter: 13,019
  flax = forward["flax"]
  assert flax["analytic_tflops"] == pytest.approx(13_019.047 / flax["median_ms"])
  assert flax["mfu"] == pytest.approx(flax["analytic_tflops"] / 989)       # H200, dense bf16
  # 20 steps of the same forward at batch 2 (one prompt, CFG).
  assert generate["analytic_gflop"] == pytest.approx(20 * forward["analytic_gflop"])


def test_readme_benchmark_tables_are_the_stored_gpu_run():
  """The results page's tables (docs/results.md, moved there from the README) are run_all's
  rendering of the stored JSONs, analytic TFLOP/s and MFU marked as recomputed; the run's wrong
  TFLOP/s and the stale claim are gone."""
  from benchmarks import run_all
  tables = run_all.readme_tables(RESULTS)
  with open(os.path.join(REPO, "docs", "results.md")) as f:
    readme = f.read()
  assert tables in readme
  assert "recomputed from the stored times" in tables and "MFU 57.2 %" in tables   # FLUX's forward
  assert "0.836 TFLOP/s" not in readme and "No GPU has run it yet" not in readme
  assert "python benchmarks/run_all.py --recompute-flops" in readme


@pytest.mark.parametrize("model", ["pixart", "sana", "flux"])
def test_forward_benchmark_counts_the_flops_of_the_call_it_times(model):
  """forward.py's analytic FLOPs at the tiny preset are the dots of the Flax call it times, on the
  very inputs its harness builds."""
  import jax
  import torch
  from benchmarks import forward
  from tests.flops_test import traced_flops
  batch = forward.DEFAULT_BATCH[model]
  case = forward.CASES[model]("tiny", batch, torch.float32, "cpu")
  inputs = tuple(None if a is None else jax.ShapeDtypeStruct(a.shape, a.dtype) for a in case.flax_args)
  traced = traced_flops(model, dict(case.torch_model.config), inputs)
  assert forward.analytic_flops({"model": model, "preset": "tiny", "batch": batch}) == traced


def test_run_all_keeps_an_earlier_measurement_that_a_short_budget_skipped():
  """A run that skips a job (out of budget) keeps the earlier run's row for it, marked with its date;
  a job that ran replaces its old row, and a job that failed before and was skipped now stays out."""
  from benchmarks import run_all
  earlier = {"date": "2026-11-29", "rows": [
      {"job": "forward_pixart", "status": "ok", "result": "old pixart"},
      {"job": "sweep_pixart", "status": "ok", "result": "old sweep"},
      {"job": "forward_sana", "status": "failed: boom"}]}
  rows = [{"job": "forward_flux", "status": "ok", "result": "new flux"},
          {"job": "forward_pixart", "status": "ok", "result": "new pixart"},
          {"job": "sweep_pixart", "status": "skipped: needs ~90 s, 10 s left"},
          {"job": "forward_sana", "status": "skipped: needs ~45 s, 10 s left"}]
  kept = {row["job"]: row for row in run_all.keep_earlier_results(rows, earlier)}
  assert kept["forward_pixart"]["result"] == "new pixart" and "earlier_run" not in kept["forward_pixart"]
  assert kept["sweep_pixart"] == {"job": "sweep_pixart", "status": "ok", "result": "old sweep",
                                  "earlier_run": "2026-11-29"}
  assert kept["forward_sana"]["status"].startswith("skipped")
  assert kept["forward_flux"]["result"] == "new flux"


def test_every_result_records_its_software_versions_and_cpu(tmp_path):
  """Issue 42: a stored ratio must say which jax, jaxlib, torch and diffusers and which CPU made it."""
  import diffusers
  import jax
  import jaxlib
  import torch
  from benchmarks import timing
  path = tmp_path / "result.json"
  timing.write_result(str(path), {"flax": {"median_ms": 1.0}})
  stored = json.loads(path.read_text())
  assert stored["flax"] == {"median_ms": 1.0}
  env = stored["environment"]
  # The modules' own version strings (timing reads the installed distributions' metadata).
  assert (env["jax"], env["jaxlib"]) == (jax.__version__, jaxlib.__version__)
  assert env["torch"] == torch.__version__ and env["diffusers"] == diffusers.__version__
  with open("/proc/cpuinfo") as f:
    models = {line.split(":", 1)[1].strip() for line in f if line.startswith("model name")}
  assert env["cpu"] in models and env["cpu_count"] == os.cpu_count()
