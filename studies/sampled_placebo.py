"""The sampled verdict's placebo (dit_jax/verdict/sets.py: top-K ranked among independent random K-sets
drawn with replacement, as runs before the exact verdict made them), on simulated runs.

    python -m studies.sampled_placebo --simulated 400

Runs of `simulate_run` (block effects with one dominant block, the case where the older rule
said yes in a third of placebo cases), judged by the sampled verdict. The exact verdict's placebo
on the shipped model is studies/placebo.py. Writes the "simulated" section of
results/placebo_sampled.json.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from benchmarks.timing import write_result
from dit_jax.verdict.stats import clopper_pearson
from dit_jax.verdict import summary, sets

RESULT = os.path.join("results", "placebo_sampled.json")
FLAGS = ("localized", "removable", "sufficient")


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
  """The verdict alone (sets.group_tests + decide) per category and K, without the
  descriptive statistics of summary.summarize (seconds per run instead of minutes)."""
  original = {r["concept"]: r for r in rows if r["kind"] == "none"}
  neutral = {r["concept"]: r for r in rows if r["kind"] == "neutral"}
  entries = [{"category": category, "k": k, "tests": sets.group_tests(original, neutral, at_k)}
             for category, _, k, at_k in summary.groups_at_k(rows)]
  sets.decide(entries)
  return entries


def simulated(runs: int, seed: int = 0, **options) -> dict:
  rng = np.random.default_rng(seed)
  per_run = [count(verdict_entries(simulate_run(rng, **options))) for _ in range(runs)]
  return {"runs": runs, "options": options, "per_run": per_run, "rates": rates(per_run)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--simulated", type=int, default=400, help="simulated placebo runs")
  parser.add_argument("--result", default=RESULT)
  args = parser.parse_args(argv)
  result = {"simulated": simulated(args.simulated)}
  write_result(args.result, result)
  for flag, r in result["simulated"]["rates"].items():
    print(f"simulated {flag:10s} runs with any: {r['runs_with_any']}/{r['runs']} "
          f"({r['run_rate']:.3f}, 95% {r['run_rate_interval'][0]:.3f}-{r['run_rate_interval'][1]:.3f}); "
          f"cells: {r['positive_cells']}/{r['cells']} ({r['cell_rate']:.3f})")


if __name__ == "__main__":
  main()
