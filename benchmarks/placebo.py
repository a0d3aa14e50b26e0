"""The verdict's false-positive rate under a placebo: top-K replaced by a random K-block set.

    python -m benchmarks.placebo --runs 20                 # the shipped Shapes model (CPU, resumable)
    python -m benchmarks.placebo --simulated 400           # simulated block effects only (seconds)

Model part: `runs` runs of configs/shapes.py with --config.placebo=True, run r with config.seed = r
(so each run draws its own placebo ranking and its own null sets), each in
runs/placebo/seed_<r>; a finished run is read back, never recomputed. Every (category, K) cell of a
placebo run where the verdict says "localized" (or "removable", "sufficient") is a false positive.
Simulated part: runs of `simulate_run` (block effects with one dominant block, the case where the
old rule said yes in a third of placebo cases), judged by the verdict and by the old rule.
Writes benchmarks/results/placebo.json: per-run counts, rates with 95% Clopper-Pearson intervals.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil

import numpy as np
from scipy import stats as scipy_stats

from benchmarks.timing import write_result
from dit_jax import analysis, verdict
from dit_jax.files import read_json, write_json

RESULT = os.path.join("benchmarks", "results", "placebo.json")
FLAGS = ("localized", "removable", "sufficient")


def clopper_pearson(hits: int, n: int) -> list[float]:
  """The exact 95% interval of a binomial proportion."""
  low = 0.0 if hits == 0 else float(scipy_stats.beta.ppf(0.025, hits, n - hits + 1))
  high = 1.0 if hits == n else float(scipy_stats.beta.ppf(0.975, hits + 1, n - hits))
  return [low, high]


def rates(per_run: list[dict]) -> dict:
  """False-positive rates over runs (any cell of a run) and over cells, with intervals, counting
  only the cells a verdict was tested in (a run without random sets in reverse tests no
  sufficiency; a cell below the presence floor gets no localized verdict)."""
  out = {}
  for flag in FLAGS:
    tested = [r for r in per_run if r[f"{flag}_tested"]]
    runs_with = sum(r[flag] > 0 for r in tested)
    cells = sum(r[f"{flag}_tested"] for r in tested)
    positives = sum(r[flag] for r in tested)
    out[flag] = {"runs": len(tested), "runs_with_any": runs_with,
                 "run_rate": runs_with / len(tested) if tested else None,
                 "run_rate_interval": clopper_pearson(runs_with, len(tested)) if tested else None,
                 "cells": cells, "positive_cells": positives,
                 "cell_rate": positives / cells if cells else None,
                 "cell_rate_interval": clopper_pearson(positives, cells) if cells else None}
  return out


def count(entries: list[dict]) -> dict:
  """A run's cells, and per verdict how many said yes and in how many it was tested (not None)."""
  found = {"cells": len(entries)}
  for flag in FLAGS:
    found[flag] = sum(bool(e.get(flag)) for e in entries)
    found[f"{flag}_tested"] = sum(e.get(flag) is not None for e in entries)
  return found


# ------------------------------------------------------------------------------------- simulation
def simulate_run(rng: np.random.Generator, categories: int = 6, blocks: int = 12,
                 ks=(2, 4, 6), prompts: int = 6, seeds: int = 1, draws: int = 200,
                 reverse_draws: int = 50, dominant: float = 0.9, placebo: bool = True) -> list[dict]:
  """Intervention rows of one simulated run, in the job's format.

  Each concept has per-block effects: block 0 dominant (removing it takes `dominant` of the
  presence, and it disturbs the rest of the image too, as position's block 0 does on the Shapes
  model), the others small and random. Per unit (prompt, seed): a presence level and a threshold
  drawn once (the same noise under every intervention, as in the job), plus a little jitter per
  intervention. top-K is a random set when `placebo`, else the K largest effects.
  """
  rows = []
  units = prompts * seeds
  for c in range(categories):
    concept, category = f"concept{c}", f"category{c}"
    effect = rng.uniform(0.0, 0.15, blocks)
    effect[0] = dominant
    level = rng.uniform(0.7, 1.0, units)
    threshold = rng.uniform(0.2, 0.6, units)

    def judged(kind, k, sets, reverse=False, context=None):
      """One row per set (sets: (S, k) block indices), presence with a little jitter per row."""
      kept = np.prod(1 - effect[sets], axis=1)[:, None]                     # (S, 1)
      presence = level * ((1 - kept) if reverse else kept)
      seen = presence + rng.normal(0, 0.05, presence.shape)
      if context is None:   # a dominant block also disturbs the rest of the image
        context = np.prod(1 - 0.5 * effect[sets] * (effect[sets] > 0.5), axis=1)[:, None] * np.ones(units)
      return [{"concept": concept, "category": category, "kind": kind, "k": k, "draw": d,
               "blocks": sorted(int(b) for b in sets[d]), "presence": float(presence[d].mean()),
               "other": {}, "scores": np.clip(seen[d], 0, 1).tolist(),
               "unit_hits": (seen[d] > threshold).astype(float).tolist(), "seeds": seeds,
               "chance": 0.2, "context": list(context[d])} for d in range(len(sets))]

    whole = np.ones((1, units))
    rows += judged("none", 0, np.zeros((1, 0), int))
    rows += judged("neutral", 0, np.arange(blocks)[None], context=whole)
    ranking = rng.permutation(blocks) if placebo else np.argsort(-effect)
    for k in ks:
      top = ranking[None, :k]
      rows += judged("top", k, top)
      rows += judged("reverse", k, top, reverse=True, context=whole)
      sets = np.stack([rng.choice(blocks, k, replace=False) for _ in range(draws)])
      rows += judged("random", k, sets)
      rows += judged("reverse_random", k, sets[:reverse_draws], reverse=True,
                     context=np.ones((reverse_draws, units)))
  return rows


def verdict_entries(rows: list[dict]) -> list[dict]:
  """The verdict alone (verdict.group_tests + decide) per category and K, without the
  descriptive statistics of analysis.summarize (seconds per run instead of minutes)."""
  original = {r["concept"]: r for r in rows if r["kind"] == "none"}
  neutral = {r["concept"]: r for r in rows if r["kind"] == "neutral"}
  entries = [{"category": category, "k": k, "tests": verdict.group_tests(original, neutral, at_k)}
             for category, _, k, at_k in analysis.groups_at_k(rows)]
  verdict.decide(entries)
  return entries


def simulated(runs: int, seed: int = 0, **options) -> dict:
  rng = np.random.default_rng(seed)
  per_run = [count(verdict_entries(simulate_run(rng, **options))) for _ in range(runs)]
  return {"runs": runs, "options": options, "per_run": per_run, "rates": rates(per_run)}


# ------------------------------------------------------------------------------------------ model
STORED = os.path.join("benchmarks", "results", "placebo_runs")


def placebo_config(seed: int, workdir: str):
  """configs/shapes.py as placebo run `seed`: its own random ranking and its own null sets."""
  from configs import shapes
  config = shapes.get_config()
  config.placebo, config.seed, config.out_dir = True, seed, workdir
  return config


def expected_inputs(config) -> dict:
  """The intervention stage's inputs of a run of `config` (localize.intervention_inputs): what a
  stored unit must have been computed from to count as a run of the current default config. The
  model is named by its content, not by where this clone keeps it or when its files were written."""
  from dit_jax import entry, provenance
  from dit_jax.jobs import localize
  entry.import_plugins(config)
  judge = localize.make_judge(config, localize.full_knowledge(config))
  inputs = localize.intervention_inputs(
      config, judge, weights=provenance.weights_fingerprint(config.checkpoint, content=True))
  return {**inputs, "checkpoint": "the shipped Shapes model (dit_jax.shapes.ASSETS)"}


def model_run(seed: int, root: str, memo: dict | None = None, scored: str | None = None,
              fresh: bool = False) -> list[dict]:
  """One placebo run of configs/shapes.py, its verdict entries, recomputed from the run's rows by
  the code at hand (never read from an older summary). A finished run's rows are stored with the
  inputs they were computed from (config values, weights, judge) in
  benchmarks/results/placebo_runs/seed_<r>.json.gz, so the benchmark resumes and is re-analysed
  without the run folders; a stored run of other inputs (the default config or the model changed
  since) is refused with the differences named, or with `fresh` recomputed. The runs differ only
  in their draws, so `memo` lets them share the images of a set one of them has sampled already
  (localization.run_interventions)."""
  from dit_jax import provenance
  workdir = os.path.join(root, f"seed_{seed}")
  config = placebo_config(seed, workdir)
  config.fresh = fresh
  expected = expected_inputs(config)
  stored = os.path.join(STORED, f"seed_{seed}.json.gz")
  if os.path.exists(stored):
    with gzip.open(stored, "rt") as f:
      unit = json.load(f)
    recorded = unit.get("inputs") if isinstance(unit, dict) else None
    if recorded != expected:
      why = ("stored without its inputs (before they were recorded)" if recorded is None
             else "; ".join(provenance.differences(recorded, expected)))
      if not fresh:
        raise SystemExit(f"{stored} was computed from other inputs than the current default config's "
                         f"placebo run: {why}. Rerun with --fresh to recompute it.")
      os.remove(stored)
  if not os.path.exists(stored):
    from dit_jax.jobs import localize
    if scored:
      _reuse_scores(scored, workdir)
    localize.run(config, workdir, memo)   # resumes what the workdir holds from these inputs
    with open(os.path.join(workdir, "interventions.jsonl")) as f:
      rows = [json.loads(line) for line in f if line.strip()]
    os.makedirs(STORED, exist_ok=True)
    with gzip.open(stored, "wt") as f:
      json.dump({"inputs": expected, "rows": rows}, f)
  with gzip.open(stored, "rt") as f:
    return analysis.summarize(json.load(f)["rows"])


def _reuse_scores(first: str, workdir: str) -> None:
  """A placebo run's attention scores are those of a run this process made (the seed and the
  placebo decide only the sweep): copy them with their recorded inputs, which the job checks as
  for any resume."""
  record = os.path.join(first, "inputs.json")
  if first == workdir or os.path.exists(workdir) or not os.path.exists(record):
    return
  shutil.copytree(os.path.join(first, "scores"), os.path.join(workdir, "scores"))
  write_json(os.path.join(workdir, "inputs.json"), {"scores": read_json(record)["scores"]})


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--runs", type=int, default=0, help="placebo runs of configs/shapes.py")
  parser.add_argument("--simulated", type=int, default=400, help="simulated placebo runs")
  parser.add_argument("--root", default=os.path.join("runs", "placebo"))
  parser.add_argument("--result", default=RESULT)
  parser.add_argument("--fresh", action="store_true",
                      help="recompute stored runs made from other inputs (another default config or model)")
  args = parser.parse_args(argv)
  result = read_json(args.result) if os.path.exists(args.result) else {}
  if args.simulated:
    result["simulated"] = simulated(args.simulated)
  if args.runs:
    per_run, memo, scored = [], {}, None
    for seed in range(args.runs):
      entries = model_run(seed, args.root, memo, scored, args.fresh)
      if scored is None and os.path.isdir(os.path.join(args.root, f"seed_{seed}", "scores")):
        scored = os.path.join(args.root, f"seed_{seed}")
      per_run.append({"seed": seed, **count(entries)})
      result["model"] = {"config": "configs/shapes.py --config.placebo=True --config.seed=<run>",
                         "per_run": per_run, "rates": rates(per_run)}
      write_result(args.result, result)     # after every run: nothing computed is lost
  write_result(args.result, result)
  for part in ("simulated", "model"):
    if part in result:
      for flag, r in result[part]["rates"].items():
        if not r["runs"]:
          print(f"{part:9s} {flag:10s} not tested in any run")
          continue
        print(f"{part:9s} {flag:10s} runs with any: {r['runs_with_any']}/{r['runs']} "
              f"({r['run_rate']:.3f}, 95% {r['run_rate_interval'][0]:.3f}-{r['run_rate_interval'][1]:.3f}); "
              f"cells: {r['positive_cells']}/{r['cells']} ({r['cell_rate']:.3f})")


if __name__ == "__main__":
  main()
