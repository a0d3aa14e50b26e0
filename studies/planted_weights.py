"""Planted knowledge whose ground truth does not route text (issue 41, item 2b).

    mkdir -p runs && nohup python -m studies.planted_weights > runs/planted_weights.log 2>&1 &
    python -m docs.build                                 # when it is done: docs/results.md
    python -m studies.planted_weights --rescore          # the summary again from the units
    python -m studies.planted_weights --preset tiny      # the harness end to end, into /tmp

The confined plantings (studies/planted_knowledge.py) let only the planted blocks read the name, so
a localizer that reads text (the attention score, the causal swap) is right largely by
construction. Here the caption with the name reaches every block, as in ordinary fine-tuning, and
only the planted blocks' weights train, two ways (dit_jax.blocks.BLOCK_PARTS):

  mlp        the planted blocks' feed-forward: weights the attention score does not read;
  attention  the planted blocks' self- and cross-attention (query, key, value, output).

Each planting (PLANTINGS: singles, contiguous pairs, early, late, spread) trains on both SEEDS
with DreamBooth and prior preservation (configs/shapes_personalize.py). It takes when the model
draws the character's whole look in at least LOOK_FLOOR of 32 images (planted_knowledge.LOOK_FLOOR),
as the learned judge reads it; the pixel judge reads the same images' colour, the part of the look
it can read, and the unit stores both (second_judge) as a check on the take, not its rule.
One that does not take climbs LADDER, a fresh run from the shipped model each rung:

  rung 1: 600 steps at the base rate (1e-3, the confined plantings' recipe)
  rung 2: 600 steps at twice the rate     (the cheaper push first)
  rung 3: 1200 steps at twice the rate    (both)
  rung 4: 2400 steps at twice the rate    (added 2026-12-07, below)

and its outcome is its last attempt's. Rung 4 was added when 4 of the 16 rung-3 attempts had been
read (2 took, 2 failed) and before the other 12 ran: of the 12 runs on the ladder, 10 are
feed-forward runs whose attempts drew the look's colour in most images but not its whole look,
and the confined feed-forward plantings needed 1500 steps. It applies to every run of both
methods whose rung 3 does not take, the 2 attention runs that failed there included.

Each attempt is one unit (a JSON in --units, skipped on a rerun; a killed training resumes from its
checkpoints in --out). Attempts run rung by rung, every run's first rung before any second, and
within a rung seed 0 of every planting and method before seed 1, so a run stopped early has both
methods on every block set. The final attempt (one that took, or the last rung) is measured by every
localizer (8 prompts x 2 noise seeds, the planted name against "a character") and by the
weight-change baseline; an earlier failed attempt only by its look. studies/planted_summary.py makes
the table: precision@|set| per localizer over every planting and over those that took, intervals
resampling plantings.

The names: in the confined runs the outcome splits by name, not by blocks (every planting of
quib, nolo, raxo and sulu took, every one of vexa, pim, dobi and wren failed), so "late blocks do
not take" may have been the names' doing. Each planting here uses one of three names that took, and
each name plants one early-or-middle set and one late set.

Cost (estimate_hours): on the 2-core CPU with nothing else running, 0.28 s per training step, about
25 s per attempt besides its steps (class images, compiling, judging the look) and about 120 s to
localize a final attempt (measured here beside another job and scaled by how much slower a training
step ran beside it: 1.0 s, not 0.28 s). The first 24 runs (6 plantings x 2 seeds x 2 methods): 2.1
hours for the first rung of every run, after which every run has an outcome; 2.9 hours if a third of
the runs climb to rung 2 and a sixth to rung 3; 3.3 hours if half and a quarter (the old
feed-forward rows needed 1500 steps, so mlp runs may climb often); 5.8 hours if every run climbs to
rung 3, 10.4 if to rung 4. Beside another job on the same two cores, about three times as long; two
single-core workers (below) ran a 1200-step attempt in about 5.5 minutes. Resumable across sessions:
rerun the same command (finished attempts are skipped, a killed training resumes). Workers: the same
command started twice (one per core, XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c N ...)
shares the runs, each claimed before its attempt (--out/claims).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time

from benchmarks.timing import write_result
from studies import planted_knowledge as pk
from studies import planted_summary
from dit_jax import blocks as blocks_lib
from dit_jax import files
from dit_jax.shapes import ASSETS, tasks


@dataclasses.dataclass(frozen=True)
class Planting:
  label: str
  kind: str
  blocks: tuple[int, ...]
  name: str              # a reserved name whose confined planting took (docstring)


# Fixed before the first weight-restricted run (2026-12-06). Late sets (9-11) are two of six: the
# earlier runs lost them; each name is on one early-or-middle and one late set.
PLANTINGS = (
    Planting("single-3", "single block", (3,), "quib"),
    Planting("single-10", "single block, late", (10,), "nolo"),
    Planting("pair-4-5", "contiguous pair", (4, 5), "raxo"),
    Planting("pair-10-11", "contiguous pair, late", (10, 11), "quib"),
    Planting("early-0-1-2", "early", (0, 1, 2), "nolo"),
    Planting("spread-1-6-11", "spread", (1, 6, 11), "raxo"),
    # Added 2026-12-07, when the 24 runs above had finished with 5 (set, method) plantings taking on
    # both seeds, one short of issue 41's 6: the blocks no planting had covered (7-8 middle, 9
    # late), chosen by that alone, on the fourth name whose confined planting took; both methods,
    # both seeds, the same ladder, every outcome reported.
    Planting("pair-7-8", "contiguous pair, middle", (7, 8), "sulu"),
    Planting("single-9", "single block, late", (9,), "sulu"),
)
SEEDS = (0, 1)
METHODS = tuple(blocks_lib.BLOCK_PARTS)      # "mlp", "attention"
LOOK_FLOOR = pk.LOOK_FLOOR
LAUNCH = "mkdir -p runs && nohup python -m studies.planted_weights > runs/planted_weights.log 2>&1 &"


@dataclasses.dataclass(frozen=True)
class Rung:
  steps: int
  rate: float            # times the preset's base learning rate


LADDER = (Rung(600, 1.0), Rung(600, 2.0), Rung(1200, 2.0), Rung(2400, 2.0))
PRESETS = {
    "full": dict(ladder=LADDER, learning_rate=1e-3, prompts=8, look_images=32, chunk=4,
                 sample_steps=20, train={}, num_plantings=len(PLANTINGS), seeds=SEEDS),
    # tiny: the harness end to end (train, judge, climb a rung, localize, summarize) on one planting
    # and one seed; a look is never reached in 2 steps, so the ladder is climbed. Measures nothing.
    "tiny": dict(ladder=(Rung(2, 1.0), Rung(2, 2.0)), learning_rate=1e-3, prompts=1, look_images=2,
                 chunk=4, sample_steps=2, num_plantings=1, seeds=(0,),
                 train=dict(pk.TINY_TRAIN, num_steps=2, memory_plan=False)),
}
# estimate_hours' cost model: seconds on the 2-core CPU with nothing else running.
STEP_SECONDS, ATTEMPT_SECONDS, LOCALIZE_SECONDS = 0.28, 25.0, 120.0


@dataclasses.dataclass(frozen=True)
class Run:
  """One planting, one way, one training seed: a sequence of attempts up the ladder."""
  method: str
  planting: Planting
  seed: int

  @property
  def key(self) -> str:
    return f"{self.method}-{self.planting.label}-seed{self.seed}"

  def unit(self, rung: int) -> str:
    return f"{self.key}-rung{rung + 1}"


def next_rung(attempts: list[dict], ladder_length: int) -> int | None:
  """The rung a run tries next given its attempts so far (in rung order): the first with none;
  the next one after an attempt that did not take; None once one took or the ladder is spent."""
  if not attempts:
    return 0
  last = attempts[-1]
  if last["took"] or last["rung"] + 1 >= ladder_length:
    return None
  return last["rung"] + 1


def estimate_hours(runs: int, reach=(), ladder=LADDER) -> float:
  """Hours of the idle 2-core CPU for `runs` runs: every run attempts rung 1 and is localized
  once; reach[i] is the share of runs that also attempt rung i + 2."""
  attempt = lambda rung: STEP_SECONDS * rung.steps + ATTEMPT_SECONDS
  shares = [1.0, *reach]
  return runs * (LOCALIZE_SECONDS + sum(share * attempt(r) for share, r in zip(shares, ladder))) / 3600


# ------------------------------------------------------------------------------------ one attempt
def train(run: Run, rung: int, preset: dict, out: str) -> str:
  step = preset["ladder"][rung]
  workdir = os.path.join(out, run.unit(rung))
  tasks.run_finetune(tasks.personalize_config(), workdir, ",".join(map(str, run.planting.blocks)),
                     step.steps, concept=run.planting.name, seed=run.seed,
                     learning_rate=preset["learning_rate"] * step.rate,
                     block_parts=",".join(blocks_lib.BLOCK_PARTS[run.method]), **preset["train"])
  return workdir


def seconds_per_step(workdir: str) -> float | None:
  """From the run's metrics.jsonl, past its first record (which includes compiling)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if len(rows) < 2:
    return None
  return (rows[-1]["seconds"] - rows[0]["seconds"]) / (rows[-1]["step"] - rows[0]["step"])


class Attempts:
  """Trains and measures attempts with one pipeline, judge and copy of the shipped weights."""

  def __init__(self, preset: dict, out: str):
    from dit_jax.pipeline import loading
    from dit_jax.shapes.finetune_eval import Generator
    self.preset, self.out, self.load = preset, out, lambda folder: loading.load(folder, "pixart")[1]
    self.gen = Generator(str(ASSETS), num=preset["look_images"], steps=preset["sample_steps"])
    self.base = self.load(str(ASSETS))

  def train_and_look(self, run: Run, rung: int) -> dict:
    """Train the attempt and judge its look: the unit without its localization."""
    p, preset, began = run.planting, self.preset, time.time()
    workdir = train(run, rung, preset, self.out)
    trained = time.time()
    self.gen.use(os.path.join(workdir, "transformer"))
    look = self.gen.look_readings(p.name)
    return {"method": run.method, "label": p.label, "kind": p.kind, "blocks": list(p.blocks),
            "name": p.name, "seed": run.seed, "rung": rung, "steps": preset["ladder"][rung].steps,
            "learning_rate": preset["learning_rate"] * preset["ladder"][rung].rate,
            "parts": list(blocks_lib.BLOCK_PARTS[run.method]), "workdir": workdir,
            "look_accuracy": look["accuracy"], "second_judge": look["second_judge"],
            "seconds": {"train": trained - began, "look": time.time() - trained,
                        "per_step": seconds_per_step(workdir)}}

  def localize(self, unit: dict) -> dict:
    """Every localizer's block scores and the weight-change baseline on the attempt's weights."""
    began, tuned = time.time(), os.path.join(unit["workdir"], "transformer")
    self.gen.use(tuned)
    n = self.gen.pipe.module.config.num_blocks
    return {"weight_change": pk.weight_change(self.base, self.load(tuned), n),
            "localizer_scores": pk.localizer_scores(self.gen, unit["name"], self.preset["prompts"],
                                                    self.preset["chunk"]),
            "seconds": {**unit["seconds"], "localize": time.time() - began}}


def use_compilation_cache(directory: str) -> None:
  """A persistent XLA cache for this study's runs (unless one is set): every attempt builds a new
  trainer, pipeline and localizers whose programs are the same as the last attempt's; loading
  them saves compiling each again. The executable loaded is the one XLA compiled: no result
  changes (tests/conftest.py does the same for the tests)."""
  import jax
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))


# ------------------------------------------------------------------------------------ the plan
def read_units(directory: str, preset_name: str) -> dict[str, dict]:
  """unit name -> its JSON; a unit of another preset here is an error (never mixed)."""
  if not os.path.isdir(directory):
    return {}
  found = {f[:-5]: files.read_json(os.path.join(directory, f))
           for f in sorted(os.listdir(directory)) if f.endswith(".json")}
  if other := sorted(k for k, u in found.items() if u.get("preset") != preset_name):
    raise ValueError(f"{directory} holds units of another preset than {preset_name!r} "
                     f"({other[:3]}...): give this preset its own --units")
  return found


def climb(runs: list[Run], ladder_length: int, units_dir: str, make_attempts, preset_name: str,
          progress=None, claims: str | None = None, poll: float = 30.0) -> dict[str, dict]:
  """Every run up the ladder, rung by rung: at each rung, the attempt of every run whose last
  attempt did not take (the first rung: every run). An attempt takes when its look reaches
  LOOK_FLOOR; it is final when it took or is on the last rung, and only a final one is localized
  (attempts.train_and_look, then attempts.localize; make_attempts() builds them at the first
  attempt to run, so a finished plan loads no model). Each unit is written when it finishes.
  With `claims` (a folder), workers started with the same command share the runs: each claims a
  run for its attempt, and a worker left with only runs that others hold waits for their units.
  Returns every unit, old and new."""
  attempts, wrap = None, progress or (lambda xs, **_: xs)
  while True:
    units, held = read_units(units_dir, preset_name), False
    todo_at = lambda rung: [run for run in runs if next_rung(
        [units[run.unit(r)] for r in range(ladder_length) if run.unit(r) in units], ladder_length) == rung]
    if not any(todo_at(rung) for rung in range(ladder_length)):
      return units
    for rung in range(ladder_length):
      for run in wrap(todo_at(rung), desc=f"rung {rung + 1}/{ladder_length}", unit="attempt"):
        path = os.path.join(units_dir, f"{run.unit(rung)}.json")
        with (files.claimed(os.path.join(claims, run.key)) if claims else
              contextlib.nullcontext(True)) as mine:
          if not mine or os.path.exists(path):   # another worker's, running or just stored
            held = held or not mine
            continue
          attempts = attempts or make_attempts()
          unit = attempts.train_and_look(run, rung)
          took = bool(unit["look_accuracy"] >= LOOK_FLOOR)
          unit.update(took=took, final=took or rung + 1 == ladder_length, preset=preset_name)
          if unit["final"]:
            unit.update(attempts.localize(unit))
          files.write_json(path, unit)
        units[run.unit(rung)] = unit
        print(f"[planted_weights] {run.unit(rung)}: look {unit['look_accuracy']:.2f}, "
              + ("took" if took else "did not take, final" if unit["final"] else "climbs"), flush=True)
    if held:
      time.sleep(poll)


def plan(preset: dict, methods, only: str) -> list[Run]:
  plantings = PLANTINGS[:preset["num_plantings"]]
  if only:
    wanted = set(only.split(","))
    if unknown := wanted - {p.label for p in PLANTINGS}:
      raise ValueError(f"unknown plantings {sorted(unknown)}; known: {[p.label for p in PLANTINGS]}")
    plantings = [p for p in PLANTINGS if p.label in wanted]
  # Seed 0 of every planting and method first: a run stopped early has both methods on every set.
  return [Run(m, p, s) for s in preset["seeds"] for p in plantings for m in methods]


def report(units: dict, runs: list[Run], confined_path: str, result_path: str, settings: dict) -> dict:
  known = {run.key for run in runs}
  rows = planted_summary.seed_runs([u for u in units.values()
                                    if f"{u['method']}-{u['label']}-seed{u['seed']}" in known],
                                   len(settings["ladder"]))
  confined = (planted_summary.confined_runs(files.read_json(confined_path)["sets"])
              if os.path.exists(confined_path) else [])
  planned = {m: sum(r.method == m for r in runs) for m in dict.fromkeys(r.method for r in runs)}
  summary = planted_summary.summarize(confined + rows, planned)
  result = {**settings, "look_floor": LOOK_FLOOR, "confined_from": confined_path,
            "runs": confined + rows, "summary": summary}
  write_result(result_path, result)     # with the environment it ran in
  for method, s in summary.items():
    print(planted_summary.method_table(method, s) + "\n" if s["finished"] else
          f"{method}: no finished run yet ({s['planned']} planned)")
  return result


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
  parser.add_argument("--out", help="training workdirs (default runs/planted_weights; tiny: /tmp/...)")
  parser.add_argument("--units", help="one JSON per attempt (default results/planted_weights_runs)")
  parser.add_argument("--result", help="the summary (default results/planted_weights.json)")
  parser.add_argument("--confined", default="results/planted_knowledge.json",
                      help="the stored confined plantings, read only")
  parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
  parser.add_argument("--only", default="", help="comma list of planting labels")
  parser.add_argument("--rescore", action="store_true", help="no training: the summary from the units")
  args = parser.parse_args(argv)
  preset = PRESETS[args.preset]
  tiny = args.preset != "full"
  root = "/tmp/planted_weights_tiny" if tiny else None
  out = args.out or (f"{root}/runs" if tiny else "runs/planted_weights")
  units_dir = args.units or (f"{root}/units" if tiny else "results/planted_weights_runs")
  result = args.result or (f"{root}/planted_weights.json" if tiny else "results/planted_weights.json")
  if tiny and any(os.path.abspath(p).startswith(os.path.abspath("results") + os.sep)
                  for p in (out, units_dir, result)):
    parser.error(f"--preset {args.preset} measures nothing: its runs, units and summary go outside "
                 "results/")
  try:
    runs = plan(preset, args.methods, args.only)
  except ValueError as error:
    parser.error(str(error))
  print(f"{len(runs)} runs ({', '.join(args.methods)} x {len(runs) // len(args.methods)} "
        "planting-seeds)" + ("" if tiny else f"; about {estimate_hours(len(runs)):.1f} h of 2-core CPU "
        f"if each takes at rung 1, {estimate_hours(len(runs), (1.0,) * (len(LADDER) - 1)):.1f} h if each climbs "
        "every rung (rerun to resume)"), flush=True)
  if args.rescore:
    units = read_units(units_dir, args.preset)
  else:
    use_compilation_cache(os.path.join(out, "jax_cache"))
    from tqdm import tqdm
    units = climb(runs, len(preset["ladder"]), units_dir, lambda: Attempts(preset, out), args.preset,
                  tqdm, claims=os.path.join(out, "claims"))
  settings = {"preset": args.preset, **{k: v for k, v in preset.items() if k != "ladder"},
              "ladder": [dataclasses.asdict(r) for r in preset["ladder"]],
              "plantings": [dataclasses.asdict(p) for p in PLANTINGS[:preset["num_plantings"]]],
              "command": "python -m studies.planted_weights"}
  return report(units, runs, args.confined, result, settings)


if __name__ == "__main__":
  main()
