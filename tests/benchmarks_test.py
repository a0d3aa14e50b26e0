"""The GPU benchmarks' harnesses, run at their tiny CPU presets: they must measure the right thing."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.pixart_test import REPO


@pytest.fixture(scope="module")
def run_all_tiny(tmp_path_factory):
  """run_all at its tiny preset, once for this file: (the finished process, its summary, each
  job's own JSON by name). The tests below read one benchmark each from it, so no harness runs
  twice."""
  results = tmp_path_factory.mktemp("run_all")
  done = subprocess.run([sys.executable, "benchmarks/run_all.py", "--preset", "tiny", "--results",
                         str(results), "--budget-minutes", "30"], cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  summary = json.loads(next(results.glob("run_all_tiny_*.json")).read_text())
  outputs = {row["job"]: json.loads(open(row["json"]).read()) for row in summary["rows"] if "json" in row}
  return done, summary, outputs


@pytest.mark.slow   # every benchmark at its tiny preset, each in its own process (about 4 minutes)
def test_run_all_runs_every_benchmark_end_to_end_at_the_tiny_preset(run_all_tiny):
  from benchmarks import run_all
  done, summary, outputs = run_all_tiny
  assert [r["job"] for r in summary["rows"]] == [j.name for j in run_all.JOBS]
  for row in summary["rows"]:
    assert row["status"] == "ok" and "no summary" not in row["result"], row
    assert outputs[row["job"]]                        # each benchmark's own JSON
    assert row["job"] in done.stdout                  # and one printed table


@pytest.mark.slow
def test_sweep_benchmark_times_a_sweep_that_equals_diffusers_when_it_swaps_nothing(run_all_tiny):
  result = run_all_tiny[2]["sweep_pixart"]
  assert result["interventions"] == 4          # one per block of the tiny PixArt
  assert result["no_op_sweep_rel_error_vs_diffusers"] < 1e-4
  assert result["flax"]["images_per_s"] > 0 and result["diffusers"]["images_per_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pixart", "flux"])
def test_finetune_benchmark_localized_step_holds_less_state(model, run_all_tiny):
  from benchmarks import finetune_step
  result = run_all_tiny[2][f"finetune_{model}"]
  rows = {r["variant"]: r for r in result["rows"]}
  assert set(rows) == {"localized", "full"}, result["rows"]
  assert rows["localized"]["blocks"] == finetune_step.LOCALIZED[(model, "tiny")]
  assert rows["localized"]["trainable_parameters"] < rows["full"]["trainable_parameters"]
  # Gradient + Adam state is proportional to the trainable parameters (float32: 3 x 4 bytes each).
  for r in rows.values():
    assert r["grad_and_optimizer_bytes"] == pytest.approx(12 * r["trainable_parameters"], rel=0.01)
  assert rows["localized"]["xla_plan_bytes"]["peak"] < rows["full"]["xla_plan_bytes"]["peak"]


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


# ---------------------------------------------------------------------------------------------
# Issue 42, item 5: the diffusers baselines (eager, fused QKV, torch.compile default and
# max-autotune) and the order and budget of run_all (item 8).

# SDPA calls in one tiny forward: PixArt self + cross per block (4 blocks), SANA cross only (its
# self-attention is linear, 2 blocks), FLUX one joint attention per block (2 double + 2 single).
SDPA_CALLS = {"pixart": 8, "sana": 2, "flux": 4}


def tiny_case(model):
  import torch
  from benchmarks import forward
  return forward.CASES[model]("tiny", forward.DEFAULT_BATCH[model], torch.float32, "cpu")


def forward_call(case):
  from benchmarks import forward
  return lambda module: (lambda: forward.torch_output(module, case.torch_kwargs))


@pytest.mark.parametrize("model", ["pixart", "sana", "flux"])
def test_diffusers_baselines_fuse_qkv_where_diffusers_can_and_record_the_sdpa_backend(model):
  """Fused QKV is timed where diffusers' fuse_qkv_projections() fuses something (PixArt, FLUX) and
  gives eager's output; SANA's fuses nothing, and the result says so instead of timing it twice.
  Every SDPA call of eager's forward is counted under the backend it went to."""
  from benchmarks import diffusers_baselines as baselines
  case = tiny_case(model)
  published = set(case.torch_model.state_dict())
  result = baselines.time_baselines(case.torch_model, forward_call(case), lambda out: out, modes=(),
                                    warmup=0, iters=1)
  assert result["diffusers_eager"]["fused_qkv"] is False and result["diffusers_eager"]["iters"] == 1
  sdpa = result["sdpa_backend"]
  assert sdpa["pinned"] is None and sum(sdpa["eager_calls"].values()) == SDPA_CALLS[model], sdpa
  assert set(sdpa["eager_calls"]) <= set(baselines.SDPA_OPERATORS.values())
  fusion = result["fused_qkv"]
  if model == "sana":
    assert fusion == {"applied": False,
                      "reason": "SanaTransformer2DModel.fuse_qkv_projections() fused no attention module"}
    assert baselines.FUSED_EAGER_ENTRY not in result
  else:
    assert fusion["applied"] and fusion["fused_modules"] == SDPA_CALLS[model]
    fused = result[baselines.FUSED_EAGER_ENTRY]
    assert fused["fused_qkv"] is True and fused["rel_error_vs_eager"] < 1e-5
  # The Flax conversion reads the published keys only: the fused copies are left out.
  assert set(baselines.kept_state(case.torch_model, published)) == published


class FakeCompile:
  """torch.compile's stand-in: records each mode and how many attention modules were fused when it
  was asked, and returns the model itself (no build)."""

  def __init__(self):
    self.calls = []

  def __call__(self, model, mode=None):
    from benchmarks import diffusers_baselines as baselines
    self.calls.append((mode, baselines.fused_modules(model)))
    return model


def test_max_autotune_compiles_the_fused_model_and_default_mode_the_unfused_one(monkeypatch):
  """The default-mode number stays comparable with the stored runs (unfused); max-autotune, the
  strongest baseline, gets the fused model; each entry says how it ran."""
  import torch
  from benchmarks import diffusers_baselines as baselines
  fake = FakeCompile()
  monkeypatch.setattr(torch, "compile", fake)
  case = tiny_case("pixart")
  result = baselines.time_baselines(case.torch_model, forward_call(case), lambda out: out,
                                    modes=("default", "max-autotune"), warmup=0, iters=1)
  assert fake.calls == [(None, 0), ("max-autotune", 8)]
  default, best = result["diffusers_compile"], result["diffusers_compile_max_autotune"]
  assert (default["mode"], default["fused_qkv"]) == ("default", False)
  assert (best["mode"], best["fused_qkv"]) == ("max-autotune", True)
  for entry in (default, best):
    assert entry["compile_seconds"] > 0 and entry["rel_error_vs_eager"] < 1e-5
    assert {"median_ms", "min_ms", "iters", "dynamo_graphs", "graph_breaks"} <= set(entry)


@pytest.mark.slow
def test_max_autotune_builds_the_fused_pixart_in_one_graph_that_gives_eager_output():
  """A real torch.compile(mode="max-autotune") of the fused tiny PixArt on the CPU (about 40 s to
  build with a cold inductor cache): one graph, no graph break, eager's output."""
  from benchmarks import diffusers_baselines as baselines
  case = tiny_case("pixart")
  result = baselines.time_baselines(case.torch_model, forward_call(case), lambda out: out,
                                    modes=("max-autotune",), fused_eager=False, warmup=0, iters=1)
  entry = result["diffusers_compile_max_autotune"]
  assert (entry["mode"], entry["fused_qkv"], entry["dynamo_graphs"], entry["graph_breaks"]) == \
      ("max-autotune", True, 1, 0)
  assert entry["rel_error_vs_eager"] < 1e-5 and entry["compile_seconds"] > 0


def test_compile_modes_follow_the_flags():
  """--compile auto compiles on a GPU only (a CPU build takes minutes); --compile-modes names the
  modes, run default first (it times the unfused model), and refuses an unknown one."""
  from benchmarks.diffusers_baselines import compile_modes
  both = "max-autotune,default"
  assert compile_modes("auto", both, cuda=False) == ()
  assert compile_modes("auto", both, cuda=True) == ("default", "max-autotune")
  assert compile_modes("yes", "max-autotune", cuda=False) == ("max-autotune",)
  assert compile_modes("no", both, cuda=True) == ()
  with pytest.raises(SystemExit, match=r"--compile-modes: unknown \['reduce-overhead'\]"):
    compile_modes("yes", "reduce-overhead", cuda=True)


class Counted:
  """A transformer wrapper that counts its calls and otherwise is the transformer."""

  def __init__(self, inner):
    self.inner, self.calls = inner, 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.inner(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.inner, name)


def test_generate_times_the_pipeline_loop_with_the_compiled_transformer_inside(monkeypatch):
  """generate.py's compiled baseline is diffusers' own pipeline loop with the (fused) transformer
  compiled: every step goes through the compiled module; the pipeline gets its eager one back."""
  import torch
  from benchmarks import generate
  compiled = []

  def fake_compile(model, mode=None):
    compiled.append(Counted(model))
    return compiled[-1]

  monkeypatch.setattr(torch, "compile", fake_compile)
  run = generate.make_sampling("pixart", "tiny", batch=1, steps=2, guidance=4.5, dtype="float32")
  eager = run.pipe.transformer
  result = generate.diffusers_baselines(run, ("max-autotune",), iters=1)
  entry = result["diffusers_compile_max_autotune"]
  assert entry["fused_qkv"] is True and entry["rel_error_vs_eager"] < 1e-5
  assert compiled[0].calls == 2 * 3          # 2 steps x (build + 1 warmup + 1 timed loop)
  assert run.pipe.transformer is eager and "diffusers" in result and "diffusers_eager" not in result


def test_run_all_runs_the_headline_forwards_first_and_fits_eight_minutes_without_max_autotune():
  """Issue 42, item 8: FLUX's forward first, then PixArt's and SANA's, the two generation loops
  and the attention kernels; the default budget is 8 minutes, which those six fit without the
  max-autotune builds (--no-max-autotune); with them each forward and generate job asks for it."""
  from benchmarks import run_all
  first = ["forward_flux", "forward_pixart", "forward_sana", "generate_pixart", "generate_sana", "attention"]
  assert [job.name for job in run_all.JOBS[:6]] == first
  assert run_all.build_parser().parse_args([]).budget_minutes == 8
  assert sum(job.seconds(max_autotune=False) for job in run_all.JOBS[:6]) <= 8 * 60
  for job in run_all.JOBS[:5]:
    full, plain = job.arguments("full"), job.arguments("full", max_autotune=False)
    assert "max-autotune" in full[full.index("--compile-modes") + 1] and "max-autotune" not in plain
    assert job.seconds() > job.seconds(max_autotune=False)
    assert job.arguments("tiny") == job.tiny                # CPU-fast: never a torch.compile build
    assert "--compile" not in job.tiny or job.tiny[job.tiny.index("--compile") + 1] == "no"
  # The command a session runs on a lent GPU, on one line, bringing the results back.
  command = next(line.strip() for line in run_all.__doc__.splitlines() if "$OUT" in line and "python" in line)
  assert command.startswith("python benchmarks/run_all.py;") and "results/*_full_gpu.json" in command


def test_run_all_summaries_give_flax_against_eager_and_max_autotune(tmp_path):
  """A run with the max-autotune baseline shows Flax's ratio to it beside eager's, as a column of
  the throughput table (absent for runs without it), and PixArt's target is held against it."""
  from benchmarks import run_all
  names = [n for n in os.listdir(RESULTS) if n.endswith("_full_gpu.json")]
  for name in names:
    shutil.copy(os.path.join(RESULTS, name), tmp_path / name)
  for name in ("forward_pixart", "generate_sana"):
    path = tmp_path / f"{name}_full_gpu.json"
    found = json.loads(path.read_text())
    found["diffusers_compile_max_autotune"] = {"median_ms": found["flax"]["median_ms"] / 2, "min_ms": 1.0,
                                               "iters": 5, "mode": "max-autotune", "fused_qkv": True}
    path.write_text(json.dumps(found))
  forward = json.loads((tmp_path / "forward_pixart_full_gpu.json").read_text())
  assert "0.50x max-autotune" in run_all.forward_summary(forward)
  assert "0.99x compiled" in run_all.forward_summary(forward)           # default mode, as before
  tables = run_all.readme_tables(str(tmp_path))
  assert "| diffusers `torch.compile` max-autotune, fused QKV |" in tables
  assert "max-autotune" not in run_all.readme_tables(RESULTS)           # stored runs: no such column
  said = run_all.readme_summary(str(tmp_path))
  assert ("PixArt's forward is 0.50x `torch.compile` max-autotune with fused QKV (target >= 1.15x: not met; "
          "0.99x its default mode)") in said
  assert "0.50x `torch.compile` max-autotune with fused QKV (target >= 1.15x against the compiled loop: not met" in said


def test_results_are_written_beside_the_benchmarks_not_inside_them():
  """results/ moved out of benchmarks/ (issue 40); a default path inside benchmarks/ wrote a file
  that no table reads (benchmarks/shapes_cpu.py did, on 2026-12-06)."""
  from benchmarks import timing
  path = timing.result_path("shapes", False)
  assert path == os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(timing.__file__))),
                              "results", "shapes_cpu.json")


def test_compared_sides_are_timed_in_turn():
  """A slow spell of the shared CPU must fall on both sides: the Shapes CPU benchmark once timed
  all of diffusers' runs, then all of ours, and its ratio moved by a third between runs."""
  from benchmarks import timing
  order = []
  calls = {name: (lambda name=name: order.append(name), lambda out: out) for name in ("a", "b")}
  found = timing.time_alternating(calls, warmup=1, iters=3)
  assert order == ["a", "b"] * 4
  assert found["a"]["iters"] == 3 and len(found["b"]["times_ms"]) == 3


def test_the_cpu_sweep_makes_calls_the_size_of_the_shipped_runs():
  """Per compiled call, benchmarks/shapes_cpu.py samples as many images as the shipped
  localization run (configs/shapes.py) does, not 4x more (its sweep once ran 4 interventions x 16
  seeds per call, 1.2x slower per image than the run's 16)."""
  from benchmarks import shapes_cpu
  assert shapes_cpu.shipped_images_per_call() == 16
