"""Timing and reporting helpers shared by the benchmarks (JSON result + printed table)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from benchmarks import flops as counts


def time_call(fn: Callable[[], object], sync: Callable[[object], object], warmup: int = 3,
              iters: int = 10) -> dict:
  """Median and min wall time (ms) of fn(), after `warmup` untimed calls; `sync` blocks on the result."""
  timed = time_alternating({"fn": (fn, sync)}, warmup, iters)["fn"]
  return {k: v for k, v in timed.items() if k != "times_ms"}


def time_alternating(calls: dict[str, tuple[Callable[[], object], Callable[[object], object]]],
                     warmup: int = 1, iters: int = 5) -> dict:
  """time_call's numbers for several (fn, sync) pairs timed in turn, A B A B ..., so that a slow
  spell of a shared machine (this project's 2-core CPU varies by 20 % between minutes) falls on
  every side alike instead of on whichever ran then. Each entry also keeps its times."""
  for _ in range(warmup):
    for fn, sync in calls.values():
      sync(fn())
  times = {name: [] for name in calls}
  for _ in range(iters):
    for name, (fn, sync) in calls.items():
      start = time.perf_counter()
      sync(fn())
      times[name].append((time.perf_counter() - start) * 1e3)
  return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "iters": iters,
                 "times_ms": t} for name, t in times.items()}


def device_name() -> str:
  try:
    import torch
    if torch.cuda.is_available():
      return torch.cuda.get_device_name(0)
  except ImportError:
    pass
  return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def add_flops(result: dict, flops: float) -> dict:
  """Throughput of a result whose every timed call (an entry with median_ms) does `flops` FLOPs
  (benchmarks/flops.py's analytic count): analytic_gflop and peak_tflops (the device's dense bf16
  peak; None for an unknown device or another dtype) on the result, analytic_tflops and mfu (None
  without a peak) on each timed entry. Reads the result's "device" and "dtype"; returns it."""
  device, dtype = result["device"], result["dtype"]
  result.update(analytic_gflop=flops / 1e9, peak_tflops=counts.peak_tflops(device, dtype))
  for entry in result.values():
    if isinstance(entry, dict) and "median_ms" in entry:
      seconds = entry["median_ms"] / 1e3
      entry.update(analytic_tflops=flops / seconds / 1e12, mfu=counts.mfu(flops, seconds, device, dtype))
  return result


def figure(x: float) -> str:
  """A throughput or FLOP count as the tables print it: whole numbers from 100 up, else 3 digits."""
  return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def percent(fraction: float | None) -> str:
  """An MFU as the tables print it: "38.1 %", or "-" where the device's peak is unknown."""
  return "-" if fraction is None else f"{100 * fraction:.1f} %"


PACKAGES = ("jax", "jaxlib", "torch", "diffusers")


def cpu_model() -> str:
  """The CPU's model name as the kernel reports it (platform.processor() is empty on Linux)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> dict:
  """What a measurement depends on besides the code (issue 42: stored CPU ratios that no later run
  reproduced came from another software environment, which the JSON did not say): the versions of
  jax, jaxlib, torch and diffusers (None where one is not installed), the CPU model and its cores."""
  from importlib import metadata
  versions = {}
  for name in PACKAGES:
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      versions[name] = None
  return {**versions, "python": platform.python_version(), "cpu": cpu_model(), "cpu_count": os.cpu_count()}


def write_result(path: str, result: dict, measured_here: bool = True) -> None:
  """The result as JSON at `path`, with the environment it was measured in (environment()).
  measured_here=False: a stored result rewritten on another machine (flops recomputed from its
  programs) keeps the environment it recorded, or none: this machine's would be false."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if measured_here:
    result = {**result, "environment": result.get("environment") or environment()}
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {path}")


def print_table(rows: list[dict], columns: list[str]) -> None:
  cells = [[str(r.get(c, "")) for c in columns] for r in rows]
  widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
  print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
  print("  ".join("-" * w for w in widths))
  for row in cells:
    print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def speed_rows(result: dict, images: int, per: str, names=("diffusers", "flax")) -> list[dict]:
  """Rows of images/s for the result's entries `names` (timed calls that each make `images`
  images; "flax" among them), with flax's speed-up; also stores images_per_s in each entry."""
  rows = []
  for name in names:
    seconds = result[name]["median_ms"] / 1e3
    result[name]["images_per_s"] = images / seconds
    rows.append({"impl": name, f"s / {per}": f"{seconds:.3f}", "images/s": f"{images / seconds:.2f}",
                 "flax speed-up": f"{result[name]['median_ms'] / result['flax']['median_ms']:.2f}x"})
  return rows


def result_path(stem: str, gpu: bool) -> str:
  """results/<stem>_<gpu|cpu>.json"""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # results/ sits beside benchmarks/
  return os.path.join(repo, "results", f"{stem}_{'gpu' if gpu else 'cpu'}.json")
