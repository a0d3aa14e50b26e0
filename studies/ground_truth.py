"""Ground truth that does not route text (issue 41, item 2a): the unmodified model's best K-block
set, from a run that swept every K-set (the exact verdict), against each localizer's top-K.

    python -m studies.ground_truth --run shapes_full_r1     # results/localize_shapes_full_r1*.json(.gz)

For every concept the judge finds in the originals (the presence floor) and every swept K > 1, the
best sets are those whose presence drop (mean over prompts and seeds) is the largest (ties on the
verdict's grid, exact.tie_level, all count). Each localizer ranks the blocks by its own scores and takes its top-K:
  precision   |top-K & best set| / K (the best of the tied best sets);
  rank        1 + the number of K-sets that remove more than top-K (1: top-K is a best set), and
              its percentile among all C(n, K) sets.
Localizers: the attention score's variants (with W_O, without, the paper's), "single-block", the
drop of each block alone (the K = 1 sweep of the same run: the causal localizer's score, from the
same images, so it is the strongest text-free baseline), and "random" (K/n expected precision,
0.5 expected percentile). Intervals bootstrap over concepts (the unit a reader generalises over).
Writes results/ground_truth.json and prints the table.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os

import numpy as np

from benchmarks.timing import write_result
from dit_jax.files import read_json
from dit_jax.models.variants import VARIANTS
from dit_jax.verdict import exact

RESULT = os.path.join("results", "ground_truth.json")


def top_k(scores, k: int) -> tuple[int, ...]:
  """The k blocks with the largest scores (ties: the lower block first)."""
  order = np.argsort(-np.asarray(scores, float), kind="stable")
  return tuple(sorted(int(b) for b in order[:k]))


def judge_cell(cell: exact.ConceptAtK, top: tuple[int, ...]) -> dict:
  """Precision of `top` against the cell's best sets, and its rank among all of them."""
  means = cell.drops.mean(axis=1)
  levels = exact.tie_level(means)                        # the verdict's ties
  index = cell.set_blocks.index(tuple(top))
  best_sets = [set(b) for b, q in zip(cell.set_blocks, levels) if q == levels.max()]
  rank = int(np.sum(levels > levels[index])) + 1
  return {"top": list(top), "precision": max(len(set(top) & b) for b in best_sets) / cell.k,
          "rank": rank, "percentile": (rank - 1) / len(means), "best": [sorted(b) for b in best_sets],
          "best_drop": float(means.max()), "top_drop": float(means[index])}


def evaluate(rows: list[dict], scores: dict[str, dict]) -> list[dict]:
  """One entry per (present concept, K > 1, localizer)."""
  cells = [c for c in exact.concept_cells(rows) if c.exact]
  present = {name for name, f in exact.floors(rows).items() if f.get("holds")}
  single = {c.concept: c for c in cells if c.k == 1}
  found = []
  for cell in cells:
    if cell.k < 2 or cell.concept not in present:
      continue
    n = 1 + max(b for s in cell.set_blocks for b in s)
    rankers = {f"attention:{v}": scores[cell.concept][v] for v in VARIANTS
               if scores.get(cell.concept, {}).get(v)}
    if cell.concept in single:
      alone = single[cell.concept]
      drops = np.zeros(n)
      for (block,), drop in zip(alone.set_blocks, alone.drops.mean(axis=1)):
        drops[block] = drop
      rankers["single-block"] = drops
    for name, block_scores in rankers.items():
      found.append({"concept": cell.concept, "category": cell.category, "k": cell.k,
                    "localizer": name, **judge_cell(cell, top_k(block_scores, cell.k))})
    found.append({"concept": cell.concept, "category": cell.category, "k": cell.k,
                  "localizer": "random", "precision": cell.k / n, "percentile": 0.5})
  return found


def summarize(entries: list[dict], resamples: int = 2000, seed: int = 0) -> list[dict]:
  """Per localizer and K: mean precision and percentile, with 95 % intervals over concepts."""
  rng = np.random.default_rng(seed)
  out = []
  for name in dict.fromkeys(e["localizer"] for e in entries):
    for k in sorted({e["k"] for e in entries}):
      these = [e for e in entries if e["localizer"] == name and e["k"] == k]
      if not these:
        continue
      row = {"localizer": name, "k": k, "concepts": len(these)}
      for key in ("precision", "percentile"):
        values = np.array([e[key] for e in these])
        means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
        row[key] = float(values.mean())
        row[f"{key}_interval"] = [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]
      if "rank" in these[0]:
        row["best_set_share"] = float(np.mean([e["rank"] == 1 for e in these]))
      out.append(row)
  return out


def table(summary: list[dict]) -> str:
  lines = ["| localizer | K | concepts | precision vs the best set | percentile among all K-sets | top-K is a best set |",
           "|---|---|---|---|---|---|"]
  for r in summary:
    interval = lambda key: f"{r[key]:.2f} [{r[key + '_interval'][0]:.2f}, {r[key + '_interval'][1]:.2f}]"
    share = f"{r['best_set_share']:.2f}" if "best_set_share" in r else "-"
    lines.append(f"| {r['localizer']} | {r['k']} | {r['concepts']} | {interval('precision')} | "
                 f"{interval('percentile')} | {share} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--run", default="shapes_full_r1", help="stored run: results/localize_<run>.json")
  parser.add_argument("--result", default=RESULT)
  args = parser.parse_args(argv)
  stored = read_json(os.path.join("results", f"localize_{args.run}.json"))
  with gzip.open(os.path.join("results", f"localize_{args.run}_rows.json.gz"), "rt") as f:
    rows = json.load(f)
  entries = evaluate(rows, stored.get("scores") or {})
  summary = summarize(entries)
  write_result(args.result, {"run": args.run, "command": "python -m studies.ground_truth --run " + args.run,
                             "summary": summary, "entries": entries})
  print(table(summary))


if __name__ == "__main__":
  main()
