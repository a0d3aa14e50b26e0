"""Store a finished localization run's summary as a result file, and print it as the README's table.

    python localize.py --config configs/shapes_full.py
    python -m studies.localization_result runs/localize_shapes_full \
        --command "python localize.py --config configs/shapes_full.py"

Reads the run's run.json (config, judge, run time, load average), its interventions.jsonl (the
summary is recomputed from the rows, so it is the code's, not a copy) and auto_k.json; writes
results/localize_<name>.json (with the localizers' agreement) and prints the README's
table (tables.markdown_statistics: drops with 95% intervals, p-values, the verdict). A run with the
exact verdict (dit_jax/verdict/exact.py) also stores its hierarchy and answer, and its rows in
results/localize_<name>_rows.json.gz, from which studies/placebo.py re-ranks its
placebos.

The fuller run's two replicates and their pooled rows (docs/results.md, "Replicates"):

    python -m studies.localization_result runs/localize_shapes_full --name shapes_full_r1 --command ...
    python -m studies.localization_result runs/localize_shapes_full_r2 --name shapes_full_r2 --command ...
    python -m studies.localization_result runs/localize_shapes_full --also runs/localize_shapes_full_r2 \
        --name shapes_full_both --command ...
"""
from __future__ import annotations

import argparse
import gzip
import json
import functools
import os

from benchmarks.timing import write_result
from dit_jax.verdict import summary, exact
from dit_jax.report import tables
from dit_jax.files import read_json, recorded_value
from dit_jax.models.variants import VARIANTS


def result_of(run_dir: str, command: str, also: tuple[str, ...] = ()) -> dict:
  """The stored result of a run; `also`: runs of the same config on other units (a replicate with
  other noise and prompts) whose rows are pooled with its own, as one run on all their units."""
  run = read_json(os.path.join(run_dir, "run.json"))
  rows = pooled_rows((run_dir, *also))
  value = functools.partial(recorded_value, run["config"])   # flat or nested by stage
  found = exact.decide(rows)
  seconds = run["seconds"] + sum(read_json(os.path.join(f, "run.json"))["seconds"] for f in also)
  return {"command": command, "runs": [run_dir, *also], "seconds": seconds,
          "load_average": run["load_average"],
          "ks": run["ks"], "prompts_per_concept": value("prompts_per_concept"),
          "seeds": value("seeds"), "random_draws": value("random_draws"),
          "reverse_draws": value("reverse_draws"), "random_overlap": value("random_overlap"),
          "depth_draws": value("depth_draws", 0),
          "concepts": sorted({r["concept"] for r in rows}),
          "localizers": value("localizers", ["attention"]),
          "judge": run["judge"]["name"], "placebo": value("placebo", False),
          "summary": summary.summarize(rows),
          "summary_by_concept": summary.summarize(rows, by="concept"),
          "auto_k": read_json(os.path.join(run_dir, "auto_k.json")),
          "scores": scores_of(run_dir),
          "agreement": (read_json(os.path.join(run_dir, "agreement.json"))
                        if os.path.exists(os.path.join(run_dir, "agreement.json")) else None),
          **({} if found is None else {"exact": {k: v for k, v in found.items() if k != "floors"},
                                       "answer": exact.answer(found)})}


def scores_of(run_dir: str) -> dict[str, dict]:
  """concept -> the ranking localizer's per-block scores, one list per variant (what
  studies/ground_truth.py ranks), from the run's scores/ folder."""
  folder, found = os.path.join(run_dir, "scores"), {}
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
    if name.endswith(".json"):
      record = read_json(os.path.join(folder, name))
      found[record.get("concept") or name[:-5].replace("_", " ")] = {
          v: record[v] for v in VARIANTS if record.get(v)}
  return found


def pooled_rows(run_dirs) -> list[dict]:
  """The rows of runs of one config on other units; the second run's onward tagged "replicate":
  the exact verdict keeps each replicate's original, top-K and sets apart and pools their ranks
  (mixing them would rank replicate 1's top-K among both replicates' sets, on the other one's
  original)."""
  return [row | ({"replicate": i} if i else {}) for i, folder in enumerate(run_dirs)
          for row in rows_of(folder)]


def rows_of(run_dir: str) -> list[dict]:
  with open(os.path.join(run_dir, "interventions.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir")
  parser.add_argument("--command", required=True, help="the command that made the run")
  parser.add_argument("--also", action="append", default=[], metavar="RUN_DIR",
                      help="pool the rows of another run of the same config (a replicate)")
  parser.add_argument("--name", default=None, help="default: the run folder's name without localize_")
  parser.add_argument("--result", default=None, help="default: results/localize_<name>.json")
  args = parser.parse_args(argv)
  name = args.name or os.path.basename(os.path.normpath(args.run_dir)).removeprefix("localize_")
  result = result_of(args.run_dir, args.command, tuple(args.also))
  write_result(args.result or os.path.join("results", f"localize_{name}.json"), result)
  if "exact" in result:
    path = os.path.join("results", f"localize_{name}_rows.json.gz")
    with gzip.GzipFile(path, "wb", mtime=0) as f:   # mtime 0: the same rows give the same bytes
      f.write(json.dumps(pooled_rows((args.run_dir, *args.also))).encode())
  print(tables.markdown_statistics(result["summary"]))
  print(tables.markdown_statistics(result["summary_by_concept"], by="concept"))


if __name__ == "__main__":
  main()
