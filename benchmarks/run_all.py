"""Every GPU benchmark in one call: one JSON per benchmark in results/, one table at the end.

    python benchmarks/run_all.py                   # full presets, bf16: an 8-minute budget on one H100
    python benchmarks/run_all.py --preset tiny     # the same harnesses at CPU size, end to end (tested)
    python benchmarks/run_all.py --only forward_pixart,forward_sana
    python benchmarks/run_all.py --no-max-autotune # without the slowest baseline: all six first jobs fit

On a lent device machine, as one command (its results come back under $OUT/results; copy them
into results/ here):

    python benchmarks/run_all.py; s=$?; mkdir -p "$OUT/results"; cp results/*_full_gpu.json "$OUT/results/"; exit $s

Runs, in this order of priority, forward.py (FLUX.1-dev, PixArt-XL-2 and SANA-1600M at 1024px, each
against diffusers eager, eager with fused QKV, torch.compile's default mode and max-autotune),
generate.py (PixArt, SANA: 20 steps, diffusers' loop eager and max-autotune), attention.py (the
attention kernels at each family's head dim), finetune_step.py (PixArt 512px localized vs full;
FLUX.1-dev localized), sweep.py (PixArt 512px, 28 single-block interventions) and
scoring_overhead.py (the Shapes model), each in its own process so that each holds the GPU alone.
Jobs run within a time budget (--budget-minutes, default 8): a job starts only if its estimated time
still fits and is stopped when the budget runs out; the table says which were skipped, and the
stored rows of skipped jobs are kept. The estimates (JOBS) are for a fresh H100; the max-autotune
builds make the whole list about twice the budget, so an 8-minute run reaches FLUX's forward and
what fits after it, and --only continues in a later call. Writes
<results>/<job>_<preset>_<gpu|cpu>.json per job and run_all_<preset>_<gpu|cpu>.json with the table;
exits non-zero if a job failed.

    python benchmarks/run_all.py --recompute-flops   # no GPU needed: rewrites the stored results

adds the analytic FLOP counts (benchmarks/flops.py: TFLOP/s, MFU against the device's peak) to the
stored forward and generate results from their stored times, and each run_all row's summary as
result_recomputed (nothing measured is changed), then prints the README's "Benchmarks" tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import timing  # noqa: E402  (after the path: run as a script)


@dataclasses.dataclass(frozen=True)
class Job:
  name: str
  module: str                      # benchmarks.<module>, run with python -m
  full: tuple[str, ...]            # arguments at the full preset
  tiny: tuple[str, ...]            # arguments at the tiny (CPU) preset
  full_seconds: float              # rough need at the full preset on an H100, without torch.compile
  summary: Callable[[dict], str]   # the headline of its JSON
  title: str = ""                  # how the README's table names it
  # Its module has analytic_flops(result): the FLOPs of each timed call of its JSON.
  counts_flops: bool = False
  # (torch.compile mode, rough build time at the full preset on a fresh H100) of each compiled
  # diffusers baseline it times (benchmarks/diffusers_baselines.py); passed as --compile-modes.
  compile_seconds: tuple[tuple[str, float], ...] = ()

  def compile_modes(self, max_autotune: bool = True) -> tuple[str, ...]:
    return tuple(mode for mode, _ in self.compile_seconds if max_autotune or mode != "max-autotune")

  def arguments(self, preset: str, max_autotune: bool = True) -> tuple[str, ...]:
    if preset == "tiny":
      return self.tiny
    if not self.compile_seconds:
      return self.full
    modes = self.compile_modes(max_autotune)
    return (*self.full, *(("--compile-modes", ",".join(modes)) if modes else ("--compile", "no")))

  def seconds(self, max_autotune: bool = True) -> float:
    """Its estimated need at the full preset, the builds of the compile modes it runs included."""
    builds = dict(self.compile_seconds)
    return self.full_seconds + sum(builds[mode] for mode in self.compile_modes(max_autotune))


def _ms(entry: dict | None) -> float | None:
  return entry["median_ms"] if entry else None


def _speedup(result: dict, reference: str) -> float:
  """Flax's speed over a reference timed in the same run (median times)."""
  return _ms(result[reference]) / _ms(result["flax"])


def throughput(entry: dict) -> list[str]:
  """Analytic TFLOP/s and MFU of a timed entry, where its result has them. XLA's cost-analysis
  "tflops" is not shown: on a GPU it misses the cuBLAS/cuDNN calls (benchmarks/flops.py)."""
  if "analytic_tflops" not in entry:
    return []
  mfu = [] if entry["mfu"] is None else [f"MFU {timing.percent(entry['mfu'])}"]
  return [f"{timing.figure(entry['analytic_tflops'])} TFLOP/s", *mfu]


# Flax's ratio to each compiled diffusers baseline, as the summaries name it: "compiled" is the
# default mode (unfused), the name earlier runs' tables used.
COMPILED = (("diffusers_compile", "compiled"), ("diffusers_compile_max_autotune", "max-autotune"))


def compiled_ratios(r: dict) -> list[str]:
  return [f"{_speedup(r, key):.2f}x {name}" for key, name in COMPILED if key in r]


def forward_summary(r: dict) -> str:
  parts = [f"flax {_ms(r['flax']):.1f} ms", f"{_speedup(r, 'diffusers_eager'):.2f}x eager", *compiled_ratios(r)]
  parts += throughput(r["flax"])
  return ", ".join(parts + [f"rel err {r['flax_vs_diffusers_rel_error']:.1e}"])


def generate_summary(r: dict) -> str:
  return ", ".join([f"{r['flax']['images_per_s']:.2f} img/s", f"{_speedup(r, 'diffusers'):.2f}x diffusers",
                    *compiled_ratios(r), *throughput(r["flax"]), f"rel err {r['final_latent_rel_error']:.1e}"])


def attention_summary(r: dict) -> str:
  """Each case's fastest implementation, and where padding head dim 72 to 80 paid (>= 5 %)."""
  best, paid = {}, []
  for row in r["rows"]:
    if "median_ms" in row and (row["case"] not in best or row["median_ms"] < best[row["case"]]["median_ms"]):
      best[row["case"]] = row
    if row.get("speedup_vs_unpadded", 0) >= 1.05:
      paid.append(f"{row['implementation']} {row['case']} {row['padding']} {row['speedup_vs_unpadded']:.2f}x")
  fastest = "; ".join(f"{case} {row['implementation']}"
                      + ("" if row["padding"] == "none" else f" {row['padding']}") + f" {row['median_ms']:.3f} ms"
                      for case, row in best.items())
  return f"fastest: {fastest}; head dim 72 -> 80 paid: {', '.join(paid) or 'nowhere'}"


def sweep_summary(r: dict) -> str:
  return (f"{r['speedup']:.2f}x diffusers (target {r['target']}), {r['interventions']} interventions, "
          f"compile {r['flax_compile_seconds']:.0f} s")


def finetune_summary(r: dict) -> str:
  if "ratios" in r:
    return ", ".join(f"{k} {v:.2f}" for k, v in r["ratios"].items()) + " (localized / full)"
  rows = [row for row in r["rows"] if "step_seconds" in row]
  peak = lambda row: row.get("measured_peak_bytes") or row["xla_plan_bytes"]["peak"]
  return "; ".join(f"{row['variant']} {row['step_seconds']:.3f} s/step, peak {peak(row) / 2**30:.3g} GiB"
                   for row in rows)


def scoring_summary(r: dict) -> str:
  return f"{100 * r['overhead']:+.1f} % over plain sampling (target <= +{100 * r['target']:.0f} %)"


# How the README names each model at its full preset.
TITLES = {"pixart": "PixArt-XL-2 1024px", "sana": "SANA-1600M 1024px", "flux": "FLUX.1-dev 1024px"}


def forward_job(model: str, seconds: float, builds: dict[str, float]) -> Job:
  full = ("--model", model, "--iters", "10", "--compile", "auto")
  tiny = ("--model", model, "--preset", "tiny", "--iters", "2", "--compile", "no", "--dtype", "float32")
  return Job(f"forward_{model}", "forward", full, tiny, seconds, forward_summary,
             f"forward, {TITLES[model]}", counts_flops=True, compile_seconds=tuple(builds.items()))


def generate_job(model: str, seconds: float, builds: dict[str, float]) -> Job:
  tiny = ("--model", model, "--preset", "tiny", "--steps", "2", "--iters", "1", "--dtype", "float32")
  return Job(f"generate_{model}", "generate", ("--model", model, "--iters", "5", "--compile", "auto"), tiny,
             seconds, generate_summary, f"generate, {TITLES[model]}", counts_flops=True,
             compile_seconds=tuple(builds.items()))


def finetune_job(model: str, seconds: float, title: str) -> Job:
  # Both variants at the tiny preset, FLUX's too (its full preset cannot hold a full step): the
  # test reads the comparison from this run (tests/benchmarks_test.py).
  tiny = ("--model", model, "--preset", "tiny", "--steps", "1", "--batch", "2", "--dtype", "float32",
          "--variants", "localized,full")
  return Job(f"finetune_{model}", "finetune_step", ("--model", model, "--steps", "3"), tiny, seconds,
             finetune_summary, title)


# In order of priority (issue 42, item 8): the forward passes against the strongest diffusers
# baseline (torch.compile max-autotune on the fused-QKV model) first, FLUX's first, then the
# generation loops, the attention kernels, and the jobs whose stored GPU results are recent.
#
# Seconds on a fresh H100. Without torch.compile: the second H200 run's measured seconds (FLUX's
# forward 83, PixArt's 78 with one default-mode build, SANA's 35, the generation loops 36 and 43 at
# 2 timed loops, fine-tuning 112 and 76, the sweep 62, scoring 30), 20 % more for the slower H100,
# plus the fused-QKV eager timing and 5 timed loops. The builds are guesses: PixArt's default-mode
# build took about 40 of its 78 s; max-autotune autotunes every matmul shape, tunes the other
# kernels by coordinate descent and records CUDA graphs, several times a default build (minutes per
# model). A generation loop's graph differs from the forward's (timestep and mask dtypes), so it
# counts as a build of its own, though inductor's on-disk caches from the forward job may shorten
# it. Every JSON stores each build as compile_seconds: replace the guesses with those.
# The first six jobs need ~18 minutes, over twice the default budget: an 8-minute run does FLUX's
# forward and what fits after it, keeping the stored rows of the rest, and --only continues in a
# later call; with --no-max-autotune the first six fit one 8-minute run (~7 minutes).
JOBS = [
    forward_job("flux", 100, {"max-autotune": 240}),   # a default-mode build of FLUX is not cheap
    forward_job("pixart", 55, {"default": 40, "max-autotune": 120}),
    forward_job("sana", 45, {"default": 30, "max-autotune": 90}),
    generate_job("pixart", 55, {"max-autotune": 120}),
    generate_job("sana", 65, {"max-autotune": 90}),
    Job("attention", "attention", ("--iters", "20"), ("--preset", "tiny", "--iters", "2"), 45,
        attention_summary, "attention kernels at each family's head dim, 1024px"),
    finetune_job("pixart", 135, "fine-tuning step, PixArt-XL-2 512px, 5 of 28 blocks vs all"),
    finetune_job("flux", 90, "fine-tuning step, FLUX.1-dev 1024px, 6 blocks"),
    Job("sweep_pixart", "sweep", ("--iters", "1"),
        ("--preset", "tiny", "--steps", "2", "--iters", "1", "--dtype", "float32"), 75, sweep_summary,
        "sweep, PixArt-XL-2 512px, 28 single-block interventions in one vmapped call"),
    Job("scoring_overhead_shapes", "scoring_overhead", ("--iters", "3"),
        ("--steps", "2", "--batch", "2", "--iters", "1"), 35, scoring_summary,
        "scoring overhead, Shapes model"),
]


@functools.lru_cache(maxsize=None)
def gpu_name() -> str | None:
  """The first NVIDIA GPU's name, asked of nvidia-smi: initialising JAX or torch here would take
  GPU memory away from the benchmarks."""
  try:
    done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
  except (OSError, subprocess.TimeoutExpired):
    return None
  return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def run_job(job: Job, preset: str, out: str, timeout: float, max_autotune: bool = True) -> dict:
  """Run one benchmark in its own process; its row of the table."""
  args = job.arguments(preset, max_autotune)
  cmd = [sys.executable, "-m", f"benchmarks.{job.module}", *args, "--out", out]
  # The repository first on the path, in this process's children and theirs (finetune_step spawns).
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
  began = time.perf_counter()
  try:
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"status": "stopped: out of budget", "seconds": time.perf_counter() - began}
  row = {"seconds": time.perf_counter() - began, "command": " ".join(cmd[1:])}
  if done.returncode or not os.path.isfile(out):
    print(f"--- {job.name} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {**row, "status": f"failed: {last[:120]}"}
  with open(out) as f:
    result = json.load(f)
  try:
    return {**row, "status": "ok", "json": out, "result": job.summary(result)}
  except (KeyError, TypeError, ZeroDivisionError) as error:   # a harness that changed its JSON
    return {**row, "status": "ok", "json": out, "result": f"(no summary: {error!r})"}


def run_all(preset: str, results: str, budget_s: float, only: set[str] | None,
            max_autotune: bool = True) -> list[dict]:
  tag = "gpu" if gpu_name() else "cpu"
  deadline = time.perf_counter() + budget_s
  rows = []
  for job in JOBS:
    if only and job.name not in only:
      continue
    left = deadline - time.perf_counter()
    need = job.seconds(max_autotune) if preset == "full" else 0
    row = {"job": job.name}
    if left <= 0 or need > left:
      rows.append({**row, "status": f"skipped: needs ~{need:.0f} s, {max(left, 0):.0f} s left"})
    else:
      print(f"[run_all] {job.name} ({preset}, ~{need:.0f} s), {left:.0f} s of budget left", flush=True)
      rows.append({**row, **run_job(job, preset, os.path.join(results, f"{job.name}_{preset}_{tag}.json"),
                                    left, max_autotune)})
  return rows


# ---------------------------------------------------------------------------------------------
# Stored results: analytic FLOPs added after the run, and the README's tables.

RECOMPUTED = ("analytic FLOPs (benchmarks/flops.py) added after the run from its stored times by "
              "python benchmarks/run_all.py --recompute-flops; the measured times are unchanged. gflop "
              "and tflops, where present, are XLA's cost analysis as the run wrote them: on a GPU it "
              "misses the cuBLAS/cuDNN custom calls")
# Timed entries of the forward and generate results, as the throughput table's columns.
IMPLEMENTATIONS = {"diffusers eager": ("diffusers_eager", "diffusers"),
                   "diffusers eager, fused QKV": ("diffusers_eager_fused_qkv",),
                   "diffusers `torch.compile`": ("diffusers_compile",),
                   "diffusers `torch.compile` max-autotune, fused QKV": ("diffusers_compile_max_autotune",),
                   "Flax": ("flax",)}


def job_result(results: str, job: Job, preset: str, tag: str) -> str:
  return os.path.join(results, f"{job.name}_{preset}_{tag}.json")


def read(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def recompute_flops(results: str, preset: str = "full", tag: str = "gpu") -> None:
  """Add the analytic FLOPs of each stored forward/generate result (from its stored times and
  preset), and to run_all_<preset>_<tag>.json each ok row's summary as result_recomputed. Only adds
  fields (re-running gives the same files): the run's own figures, XLA's tflops included, stay."""
  for job in JOBS:
    path = job_result(results, job, preset, tag)
    if job.counts_flops and os.path.isfile(path):
      result = read(path)
      count = importlib.import_module(f"benchmarks.{job.module}").analytic_flops(result)
      timing.write_result(path, {**timing.add_flops(result, count), "flops_recomputed": RECOMPUTED},
                          measured_here=False)
  path = os.path.join(results, f"run_all_{preset}_{tag}.json")
  summary, jobs = read(path), {job.name: job for job in JOBS}
  for row in summary["rows"]:
    if row["status"] == "ok":
      job = jobs[row["job"]]
      row["result_recomputed"] = job.summary(read(job_result(results, job, preset, tag)))
  timing.write_result(path, {**summary, "flops_recomputed": RECOMPUTED}, measured_here=False)


def throughput_cell(entry: dict | None) -> str:
  if entry is None:
    return "-"
  return ", ".join([f"{entry['median_ms']:.1f} ms", *throughput(entry)])


def throughput_table(results: dict[Job, dict]) -> list[str]:
  """One row per forward/generate result: its FLOPs per timed call, and each implementation's time,
  analytic TFLOP/s and MFU; a column for each implementation that some result timed."""
  shown = {name: keys for name, keys in IMPLEMENTATIONS.items()
           if any(k in r for r in results.values() for k in keys)}
  lines = ["| timed call | GFLOP per call | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
  for job, r in results.items():
    call = ", ".join([job.title, *(f"{key} {r[key]}" for key in ("steps", "batch") if key in r)])
    cells = [throughput_cell(next((r[k] for k in keys if k in r), None)) for keys in shown.values()]
    lines.append(f"| {call} | {timing.figure(r['analytic_gflop'])} | " + " | ".join(cells) + " |")
  return lines


def device_text(r: dict) -> str:
  peak = r["peak_tflops"]
  return (f"{r['device']} ({r['dtype']}; "
          + (f"MFU against its {peak:g} TFLOP/s dense bf16 peak)" if peak else "no known peak, no MFU)"))


def readme_tables(results: str, preset: str = "full", tag: str = "gpu") -> str:
  """The README's "Benchmarks" tables of a stored run_all run: each job's summary, then the
  throughput of the timed calls whose FLOPs are counted."""
  summary, jobs = read(os.path.join(results, f"run_all_{preset}_{tag}.json")), {j.name: j for j in JOBS}
  lines, counted = ["| job | result |", "|---|---|"], {}
  for row in summary["rows"]:
    job = jobs[row["job"]]
    if row["status"] != "ok":
      lines.append(f"| {job.title} | not run ({row['status']}) |")
      continue
    result = read(job_result(results, job, preset, tag))
    when = f" (earlier run, {row['earlier_run']})" if "earlier_run" in row else ""
    lines.append(f"| {job.title} | {job.summary(result)}{when} |")
    if job.counts_flops:
      counted[job] = result
  recomputed = any("flops_recomputed" in r for r in counted.values())
  caption = (f"Throughput on {', '.join(sorted({device_text(r) for r in counted.values()}))}: FLOPs "
             "counted analytically (benchmarks/flops.py), TFLOP/s and MFU from the median times"
             + (", recomputed from the stored times after the run" if recomputed else "") + ".")
  if any(job.module == "generate" for job in counted):
    caption += " A generate call is the whole denoising loop: per step, one forward of 2 x batch rows (CFG)."
  return "\n".join(lines + ["", caption, ""] + throughput_table(counted)) + "\n"


# The speed issue's targets (#27): what each headline ratio is held against.
TARGETS = {"flux_forward_vs_eager": 1.2, "pixart_forward_vs_compile": 1.15,
           "sana_generate_vs_diffusers": 1.15, "localized_peak_over_full": 0.5}


MAX_AUTOTUNE = "diffusers_compile_max_autotune"


def max_autotune_name(r: dict) -> str:
  return "`torch.compile` max-autotune" + (" with fused QKV" if r[MAX_AUTOTUNE].get("fused_qkv") else "")


def against_max_autotune(r: dict) -> str:
  """" and 0.91x `torch.compile` max-autotune ..." where the result timed that baseline, else ""."""
  return f" and {_speedup(r, MAX_AUTOTUNE):.2f}x {max_autotune_name(r)}" if MAX_AUTOTUNE in r else ""


def readme_summary(results: str, preset: str = "full", tag: str = "gpu") -> str:
  """The results page's paragraph on the stored run_all run: where it ran and each headline ratio
  against its target (TARGETS, and the targets a job's JSON carries), "met" or "not met" computed
  from the figures; what ran is read from the JSONs too (a torch.compile baseline, the variants of
  a fine-tuning step)."""
  run = read(os.path.join(results, f"run_all_{preset}_{tag}.json"))
  jobs = {j.name: j for j in JOBS}
  got = lambda name: read(job_result(results, jobs[name], preset, tag))
  flux, pixart, sana = got("forward_flux"), got("forward_pixart"), got("forward_sana")
  pixart_gen, sana_gen, step = got("generate_pixart"), got("generate_sana"), got("finetune_pixart")
  sweep, scoring, flux_step = got("sweep_pixart"), got("scoring_overhead_shapes"), got("finetune_flux")
  met = lambda ok: "met" if ok else "not met"
  # PixArt's target is against torch.compile: its strongest mode where it ran; SANA's generation
  # target against its compiled loop where one ran, else (earlier runs) against eager.
  pixart_against = MAX_AUTOTUNE if MAX_AUTOTUNE in pixart else "diffusers_compile"
  flux_x, pixart_x = _speedup(flux, "diffusers_eager"), _speedup(pixart, pixart_against)
  pixart_compile, pixart_default = "`torch.compile`", ""
  if pixart_against == MAX_AUTOTUNE:
    pixart_compile = max_autotune_name(pixart)
    if "diffusers_compile" in pixart:
      pixart_default = f"; {_speedup(pixart, 'diffusers_compile'):.2f}x its default mode"
  sana_gen_x, peak = _speedup(sana_gen, "diffusers"), step["ratios"]["xla_peak_bytes"]
  sana_compiled = any(k in r for r in (sana_gen, sana) for k in ("diffusers_compile", MAX_AUTOTUNE))
  sana_gen_target = (f"{sana_gen_x:.2f}x diffusers eager{against_max_autotune(sana_gen)} (target >= "
                     f"{TARGETS['sana_generate_vs_diffusers']}x against the compiled loop:"
                     if MAX_AUTOTUNE in sana_gen else
                     f"{sana_gen_x:.2f}x diffusers eager (target >= {TARGETS['sana_generate_vs_diffusers']}x"
                     + ("" if sana_compiled else "; no `torch.compile` baseline ran for SANA, and against "
                        "eager it is"))
  if MAX_AUTOTUNE in sana_gen:
    sana_gen_x = _speedup(sana_gen, MAX_AUTOTUNE)
  localized = next(r for r in step["rows"] if r["variant"] == "localized")
  full = next((r for r in step["rows"] if r["variant"] == "full"), {})
  measured = (localized["measured_peak_bytes"] / full["measured_peak_bytes"]
              if localized.get("measured_peak_bytes") and full.get("measured_peak_bytes") else None)
  temporaries = localized["xla_plan_bytes"]["temporaries"] / localized["xla_plan_bytes"]["peak"]
  step_targets = "; ".join(
      f"{key.replace('_', ' ')} {step['ratios'][key]:.2f}x (target <= {target}x: "
      f"{met(step['ratios'][key] <= target)})" for key, target in step.get("targets", {}).items())
  flux_variants = [r["variant"] for r in flux_step["rows"]]
  shown = os.path.relpath(results, REPO)
  return (
      f"**Latest GPU run** ({run['date']}, one {run['device']}, jax {pixart['jax']}, torch "
      f"{pixart['torch']}; `python benchmarks/run_all.py`, {run['seconds']:.0f} s; bf16, full presets; "
      f"`{shown}/*_{preset}_{tag}.json`" + (f"; {run['note']}" if run.get("note") else "")
      + "), each against diffusers in the same run on the same "
      "weights and inputs, one run each, as it came out; TFLOP/s and MFU are analytic (below). Against "
      f"the speed issue's targets (#27): FLUX.1-dev's forward is {flux_x:.2f}x diffusers eager (target >= "
      f"{TARGETS['flux_forward_vs_eager']}x: {met(flux_x >= TARGETS['flux_forward_vs_eager'])})"
      f"{against_max_autotune(flux)}; PixArt's "
      f"forward is {pixart_x:.2f}x {pixart_compile} (target >= {TARGETS['pixart_forward_vs_compile']}x: "
      f"{met(pixart_x >= TARGETS['pixart_forward_vs_compile'])}{pixart_default}) and its 20-step generation "
      f"{_speedup(pixart_gen, 'diffusers'):.2f}x diffusers eager{against_max_autotune(pixart_gen)}; SANA's "
      f"forward is {_speedup(sana, 'diffusers_eager'):.2f}x eager{against_max_autotune(sana)}, its 20-step "
      f"generation {sana_gen_target}"
      + f" {met(sana_gen_x >= TARGETS['sana_generate_vs_diffusers'])}; Flax's fastest of its "
      f"{sana_gen['flax']['iters']} timed loops took {sana_gen['flax']['min_ms']:,.0f} ms, their median "
      f"{sana_gen['flax']['median_ms']:,.0f} ms; the first GPU run, 2026-11-29, is in git history at "
      f"commit 0e5ca89); the localized PixArt step's peak memory is {peak:.2f}x full in XLA's plan"
      + (f", {measured:.2f}x measured" if measured else "") + " (target "
      f"<= {TARGETS['localized_peak_over_full']}x: {met(peak <= TARGETS['localized_peak_over_full'])}; "
      f"gradient + optimizer state is {step['ratios']['grad_and_optimizer_bytes']:.2f}x; XLA's plan of the "
      f"localized step puts {100 * temporaries:.0f} % of its peak in temporaries, the activations kept "
      "for the backward pass among them, which runs through every block from the first trained one to "
      f"the output){'; its own targets: ' + step_targets if step_targets else ''}. The PixArt sweep is "
      f"{sweep['speedup']:.2f}x diffusers (target >= {sweep['target']}x: {met(sweep['speedup'] >= sweep['target'])}); "
      f"concept scoring adds {100 * scoring['overhead']:+.1f} % to plain sampling (target <= "
      f"+{100 * scoring['target']:.0f} %: {met(scoring['overhead'] <= scoring['target'])}). The FLUX step "
      f"ran {', '.join(flux_variants)} only (benchmarks/finetune_step.py runs no full FLUX.1-dev variant).\n")


def keep_earlier_results(rows: list[dict], earlier: dict | None) -> list[dict]:
  """This run's rows, where a job was skipped or left out, the earlier run's row for it if that one
  ran: a short budget spent on other jobs must not erase a stored measurement. Carried rows say
  which run they come from (its date; the first GPU run, 2026-11-29, wrote none)."""
  if earlier is None:
    return rows
  before = {row["job"]: row for row in earlier["rows"]}
  ran = {row["job"] for row in rows if not row["status"].startswith("skipped")}
  kept = []
  for job in JOBS:
    mine = next((row for row in rows if row["job"] == job.name), None)
    old = before.get(job.name)
    if job.name not in ran and old is not None and old["status"] == "ok":
      kept.append({**old, "earlier_run": old.get("earlier_run") or earlier.get("date", "2026-11-29")})
    elif mine is not None:
      kept.append(mine)
  return kept


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=("full", "tiny"), default="full")
  parser.add_argument("--results", default=os.path.join(REPO, "results"))
  parser.add_argument("--budget-minutes", type=float, default=8.0,
                      help="stop starting jobs that no longer fit, and stop the one running, after this")
  parser.add_argument("--only", default=None, help="comma list of job names: " +
                      ", ".join(j.name for j in JOBS))
  parser.add_argument("--no-max-autotune", action="store_true",
                      help="skip the torch.compile max-autotune baselines (minutes of build per model)")
  parser.add_argument("--recompute-flops", action="store_true",
                      help="run nothing: add analytic FLOPs to the stored <results>/*_<preset>_gpu.json "
                           "and print the README's tables")
  return parser


def main(argv=None):
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.recompute_flops:
    recompute_flops(args.results, args.preset)
    print(readme_tables(args.results, args.preset))
    return 0
  only = set(args.only.split(",")) if args.only else None
  if only and (unknown := only - {j.name for j in JOBS}):
    parser.error(f"unknown jobs {sorted(unknown)}")
  os.makedirs(args.results, exist_ok=True)

  began = time.perf_counter()
  if args.budget_minutes <= 0:
    parser.error(f"--budget-minutes must be positive, got {args.budget_minutes}")
  rows = run_all(args.preset, args.results, 60 * args.budget_minutes, only, not args.no_max_autotune)
  device = gpu_name() or timing.device_name()
  print(f"\nall benchmarks, {args.preset} preset, on {device}: {time.perf_counter() - began:.0f} s")
  timing.print_table([{**r, "seconds": f"{r['seconds']:.0f}" if "seconds" in r else ""} for r in rows],
                     ["job", "status", "seconds", "result"])
  tag = "gpu" if gpu_name() else "cpu"
  path = os.path.join(args.results, f"run_all_{args.preset}_{tag}.json")
  earlier = read(path) if os.path.isfile(path) else None
  timing.write_result(path, {"preset": args.preset, "device": device, "date": time.strftime("%Y-%m-%d"),
                             "max_autotune": not args.no_max_autotune,
                             "rows": keep_earlier_results(rows, earlier),
                             "seconds": time.perf_counter() - began})
  return 1 if any(r["status"].startswith("failed") for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
