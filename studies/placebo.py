"""The exact verdict's false-positive rate and power, on the same config, by the thousand.

    python -m studies.placebo                       # the stored default run (configs/shapes.py)
    python -m studies.placebo --run full            # another stored run (localize_<name>_rows)

A run of configs/shapes.py sweeps every K-block set (dit_jax/verdict/exact.py), so a placebo needs no new
image: top-K replaced by a uniformly random set of each present concept, re-ranked on the swept
sets, through the whole hierarchy (exact.simulate). Each of --placebos runs counts its "removable"
and "localized" cells: every one is a false positive. Beside it, on the same rows, the power: the
rate of "yes" where a set removes --effect more than the mean set (the full table's median
localized effect, config.power_effect), and the rate at which the run's own answer comes back when
its prompts and seeds are resampled. The placebo p-values are checked against uniform: the exact
p counts ties against top-K (never more often small than uniform), and its tie-randomised twin
(the same rank with ties split at random) is uniform, which a Kolmogorov-Smirnov test checks.

Writes results/placebo.json (one section per run) and prints the table.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os

import numpy as np
from scipy import stats as scipy_stats

from benchmarks.timing import write_result
from dit_jax.verdict import exact
from dit_jax.verdict.stats import clopper_pearson
from dit_jax.files import read_json

RESULT = os.path.join("results", "placebo.json")
FLAGS = ("removable", "localized")
LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5)


def rows_of(name: str) -> list[dict]:
  """A stored run's intervention rows (studies.localization_result writes them)."""
  with gzip.open(os.path.join("results", f"localize_{name}_rows.json.gz"), "rt") as f:
    return json.load(f)


def rates(found: dict) -> dict:
  """Per flag: runs with any yes and cells with yes, with Clopper-Pearson intervals."""
  runs, cells = found["runs"], found["runs"] * found["cells_per_run"]
  out = {}
  for flag in FLAGS:
    hits, positive = found[flag]["runs_with_any"], found[flag]["positive_cells"]
    out[flag] = {"runs": runs, "runs_with_any": hits, "run_rate": hits / runs,
                 "run_rate_interval": clopper_pearson(hits, runs), "cells": cells,
                 "positive_cells": positive, "cell_rate": positive / cells,
                 "cell_rate_interval": clopper_pearson(positive, cells)}
  return out


def measure(rows: list[dict], placebos: int, effect: float, resamples: int) -> dict:
  placebo = exact.simulate(rows, placebos, seed=0, p_values=True)
  planted = exact.simulate(rows, placebos, effect=effect, seed=1)
  p_values = np.asarray(placebo["p_values"])
  randomised = np.asarray(placebo["randomised_p_values"])
  histogram, edges = np.histogram(randomised, bins=20, range=(0, 1))
  return {
      "placebos": placebos, "cells_per_run": placebo["cells_per_run"],
      "false_positives": rates(placebo),
      "p_at_most": {str(level): float(np.mean(p_values <= level)) for level in LEVELS},
      "randomised_p_histogram": {"edges": edges.tolist(), "counts": histogram.tolist()},
      "ks_uniform_p": float(scipy_stats.kstest(randomised, "uniform").pvalue),
      "power": {"effect": effect, **rates(planted)},
      "own_answer_replicates": exact.power_of_ranking(rows, resamples)}


def table(result: dict) -> str:
  lines = ["| run | verdict | placebo runs with any yes [95% CP] | placebo cells with yes [95% CP] | "
           "power: runs [95% CP] | power: cells | KS p (uniform) |", "|---|---|---|---|---|---|---|"]
  for name, found in result.items():
    if not isinstance(found, dict) or "false_positives" not in found:
      continue
    for flag in FLAGS:
      f, p = found["false_positives"][flag], found["power"][flag]
      lines.append(
          f"| {name} ({found['placebos']:,} placebos, {found['cells_per_run']} cells each) | {flag} | "
          f"{f['runs_with_any']}/{f['runs']} = {f['run_rate']:.4f} [{f['run_rate_interval'][0]:.4f}, "
          f"{f['run_rate_interval'][1]:.4f}] | {f['positive_cells']}/{f['cells']} = {f['cell_rate']:.4f} "
          f"[{f['cell_rate_interval'][0]:.4f}, {f['cell_rate_interval'][1]:.4f}] | "
          f"{p['run_rate']:.3f} [{p['run_rate_interval'][0]:.3f}, {p['run_rate_interval'][1]:.3f}] | "
          f"{p['cell_rate']:.3f} | {found['ks_uniform_p']:.2f} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default="shapes", help="stored run: results/localize_<run>_rows.json.gz")
  parser.add_argument("--placebos", type=int, default=10_000)
  parser.add_argument("--effect", type=float, default=None,
                      help="planted effect (default: the config's power_effect)")
  parser.add_argument("--resamples", type=int, default=200)
  parser.add_argument("--result", default=RESULT)
  args = parser.parse_args(argv)
  rows = rows_of(args.run)
  effect = args.effect
  if effect is None:
    from configs.common import base_config
    effect = base_config("pixart", 32, 32, 20, 4.5).verdict.power_effect
  result = read_json(args.result) if os.path.exists(args.result) else {}
  result = {k: v for k, v in result.items() if isinstance(v, dict) and "false_positives" in v}
  result[args.run] = measure(rows, args.placebos, effect, args.resamples)
  write_result(args.result, result)
  print(table(result))


if __name__ == "__main__":
  main()
