"""Localized fine-tuning against its controls, on the shipped Shapes model.

    python -m studies.finetune_controls                    # resumable; one unit per run
    python -m studies.finetune_controls --rescore          # the summary again from the units
    python -m studies.finetune_controls --preset tiny --units /tmp/u --out /tmp/r --result /tmp/f.json

Does training the blocks localization picks help, or is it just training fewer parameters? For each
objective, three concepts x three training seeds, four variants train the same steps (through
train.py's trainer, configs/shapes_personalize.py and configs/shapes_unlearn.py):

  localized  the top-K blocks of the concept (K = 4) in a localization run's scores.json (a new
             character has no scores yet: its category's mean ranking)
  full       every block
  random-K   K blocks drawn at random (a new draw per concept and seed)
  bottom-K   the K blocks the same scores rank last

Each variant trains at its own learning rate: the best of GRID on the tuning run (the first concept,
seed 0) by CRITERION at the last step; that run is reused as its seed-0 row. Every run is measured
at the STEPS_MEASURED checkpoints (a curve over steps):

  success       personalization: the planted look drawn (shape, colour and texture right);
                unlearning: 1 - the judge still seeing the concept
  preservation  the mean of the neighbours' accuracy (the category's other concepts, named) and
                the other categories' accuracy on captions that do not name the concept

Every mean over the concept x seed runs has a bootstrap 95 % interval, and every comparison of
localized with a control is paired (same concept, seed and measurement prompts) with a bootstrap
interval of the difference: words claim a difference only where that interval excludes 0, from
paired.MIN_PAIRS pairs on (studies/paired.py).
Units: one JSON per run in --units, written when it finishes and skipped on a rerun (training
resumes from its checkpoints in --out). Summary: results/finetune_controls.json.
"""
from __future__ import annotations

import argparse
import os
import zlib

import numpy as np

from studies import paired
from studies.paired import cell, interval
from benchmarks.timing import write_result
from dit_jax import files, blocks
from dit_jax.blocks import rank_blocks
from dit_jax.shapes import ASSETS, tasks, world
from dit_jax.shapes.finetune_eval import Generator, train_cost

OBJECTIVES = {   # objective -> (config, category, concepts); the first concept tunes the rates
    "personalization": (tasks.personalize_config, "character", ("quib", "vexa", "nolo")),
    "ablation": (tasks.unlearn_config, None, ("character:zork", "position:on the left", "shape:circle")),
}
VARIANTS = ("localized", "full", "random-K", "bottom-K")
GRID = (1e-4, 3e-4, 1e-3)
SEEDS = (0, 1, 2)
K = 4
CRITERION = "success + preservation at the last step"
PRESETS = {
    "full": dict(steps=300, measured=(100, 200, 300), num=32, grid=GRID, seeds=SEEDS, sample_steps=20),
    "tiny": dict(steps=2, measured=(1, 2), num=4, grid=(1e-3,), seeds=(0,), sample_steps=4),
}


def concepts_of(objective: str) -> list[tuple[str, str]]:
  """[(category, concept)] of an objective."""
  _, category, concepts = OBJECTIVES[objective]
  return [tuple(c.split(":", 1)) if category is None else (category, c) for c in concepts]


def block_scores(path: str) -> dict:
  """A localization run's scores.json; where there is none, the scoring stage of configs/shapes_full.py
  writes it into the file's folder (about 30 s on 2 cores; a later full run resumes from it)."""
  if not os.path.exists(path):
    from configs import shapes_full
    from dit_jax.localize import job as localize
    config = shapes_full.get_config()
    config.score_only = True
    localize.run(config, os.path.dirname(path) or ".")
  return files.read_json(path)


def block_ranking(scores: dict, category: str, concept: str) -> list[int]:
  """Blocks from most to least the concept's (with_wo); a concept without scores (a new
  character) gets its category's mean."""
  if concept in scores:
    values = np.asarray(blocks.stored_scores(scores[concept], "with_wo"))
  else:
    mine = [blocks.stored_scores(v, "with_wo") for v in scores.values() if v.get("category") == category]
    if not mine:
      raise KeyError(f"the scores have neither {concept!r} nor any {category} concept")
    values = np.mean(mine, axis=0)
  return rank_blocks(values).tolist()


def variant_blocks(variant: str, ranking: list[int], concept: str, seed: int) -> list[int] | None:
  if variant == "localized":
    return sorted(ranking[:K])
  if variant == "bottom-K":
    return sorted(ranking[-K:])
  if variant == "random-K":
    rng = np.random.default_rng([seed, zlib.crc32(concept.encode())])
    return sorted(rng.choice(len(ranking), K, replace=False).tolist())
  if variant == "full":
    return None
  raise ValueError(f"unknown variant {variant!r}: {VARIANTS}")


def measure(gen: Generator, objective: str, category: str, concept: str) -> dict:
  """The judged numbers of the weights gen now uses."""
  neighbours = [n for n in world.CONCEPTS[category] if n != concept]
  if objective == "personalization":
    concept_accuracy = gen.look_accuracy(concept)
    preserved = gen.preserved()                # the new name is in no caption
  else:
    concept_accuracy = gen.concept_accuracy(category, [concept])
    preserved = gen.preserved(category, concept)
  neighbour = gen.concept_accuracy(category, neighbours)
  success = concept_accuracy if objective == "personalization" else 1.0 - concept_accuracy
  return {"concept_accuracy": concept_accuracy, "neighbour_accuracy": neighbour,
          "preserved_accuracy": preserved, "success": success,
          "preservation": (neighbour + preserved) / 2}


def unit_name(objective, concept, variant, seed, lr) -> str:
  return f"{objective}_{concept.replace(' ', '-')}_{variant}_seed{seed}_lr{lr:g}"


def run_unit(gen, objective, category, concept, variant, blocks, seed, lr, preset, out) -> dict:
  """Train one variant and measure it at each of the preset's steps."""
  from dit_jax.train import job as train_job
  make_config = OBJECTIVES[objective][0]
  workdir = os.path.join(out, unit_name(objective, concept, variant, seed, lr))
  overrides = dict(concept=concept, seed=seed, learning_rate=lr, checkpoint_every=preset["measured"][0],
                   keep_checkpoints=len(preset["measured"]))
  if objective != "personalization":
    overrides.update(category=category, objective=objective)
  spec = "all" if blocks is None else ",".join(map(str, blocks))
  config = tasks.run_finetune(make_config(), workdir, spec, preset["steps"], **overrides)
  curve = []
  for step in preset["measured"]:
    folder = os.path.join(workdir, "transformer")
    if step != preset["steps"]:
      folder = os.path.join(workdir, f"export_step{step}")
      if not os.path.isdir(folder):
        export = config.copy_and_resolve_references()
        export.export_dir = folder
        train_job.export_checkpoint(export, workdir, step)
    gen.use(folder)
    curve.append({"step": step, **measure(gen, objective, category, concept)})
  gen.use(None)
  return {"objective": objective, "category": category, "concept": concept, "variant": variant,
          "blocks": "all" if blocks is None else blocks, "seed": seed, "learning_rate": lr,
          "steps": preset["steps"], "curve": curve, **train_cost(workdir)}


def criterion(unit: dict) -> float:
  last = unit["curve"][-1]
  return last["success"] + last["preservation"]


class Runner:
  """Runs a unit unless its JSON is there; returns the unit either way."""

  def __init__(self, args, preset, scores):
    self.args, self.preset, self.scores = args, preset, scores
    self._gen = None

  @property
  def gen(self) -> Generator:
    if self._gen is None:
      self._gen = Generator(str(ASSETS), num=self.preset["num"], steps=self.preset["sample_steps"])
    return self._gen

  def path(self, name: str) -> str:
    return os.path.join(self.args.units, name + ".json")

  def base(self, objective, category, concept) -> dict:
    path = self.path(f"{objective}_{concept.replace(' ', '-')}_base")
    if not os.path.exists(path):
      self.gen.use(None)
      files.write_json(path, {"objective": objective, "category": category, "concept": concept,
                              "variant": "base model", **measure(self.gen, objective, category, concept)})
    return files.read_json(path)

  def unit(self, objective, category, concept, variant, seed, lr) -> dict:
    path = self.path(unit_name(objective, concept, variant, seed, lr))
    if not os.path.exists(path):
      ranking = block_ranking(self.scores, category, concept)
      blocks = variant_blocks(variant, ranking, concept, seed)
      print(f"[finetune_controls] {objective} {concept} {variant} blocks {blocks or 'all'} seed {seed} "
            f"lr {lr:g}", flush=True)
      files.write_json(path, run_unit(self.gen, objective, category, concept, variant, blocks, seed,
                                      lr, self.preset, self.args.out))
    return files.read_json(path)


# ------------------------------------------------------------------------------------ summary
def summarize(units: list[dict], bases: list[dict], rates: dict) -> dict:
  """objective -> per variant and step the mean success and preservation over concept x seed runs
  (bootstrap intervals), and localized minus each control, paired by concept and seed."""
  out = {}
  for objective in dict.fromkeys(u["objective"] for u in units):
    mine = [u for u in units if u["objective"] == objective
            and u["learning_rate"] == rates[objective][u["variant"]]]
    steps = [p["step"] for p in mine[0]["curve"]]
    variants = {}
    for variant in [v for v in VARIANTS if any(u["variant"] == v for u in mine)]:
      runs = [u for u in mine if u["variant"] == variant]
      variants[variant] = {"learning_rate": rates[objective][variant], "runs": len(runs), "curve": [
          {"step": step, **{key: {"mean": float(np.mean(vals)), "interval": interval(vals)}
                            for key in ("success", "preservation")
                            for vals in [[u["curve"][i][key] for u in runs]]}}
          for i, step in enumerate(steps)]}
    versus = {}
    local = {(u["concept"], u["seed"]): u for u in mine if u["variant"] == "localized"}
    for control in [v for v in variants if v != "localized"]:
      pairs = [(local[(u["concept"], u["seed"])], u) for u in mine
               if u["variant"] == control and (u["concept"], u["seed"]) in local]
      if not pairs:
        continue
      versus[control] = {key: paired.difference([a["curve"][-1][key] for a, _ in pairs],
                                                [b["curve"][-1][key] for _, b in pairs])
                         for key in ("success", "preservation")}
    base = {b["concept"]: b for b in bases if b["objective"] == objective}
    out[objective] = {"variants": variants, "localized_minus": versus,
                      "base_model": {c: {k: b[k] for k in ("success", "preservation")} for c, b in base.items()},
                      "concepts": sorted({u["concept"] for u in mine}),
                      "seeds": sorted({u["seed"] for u in mine})}
  return out


def verdict(row: dict) -> str:
  """Words only where the paired interval excludes 0, from paired.MIN_PAIRS pairs on."""
  said = paired.verdict(row)
  return f"localized {said}" if said in ("higher", "lower") else said


def claims(summary: dict) -> str:
  """What the paired comparisons support, in words that follow their verdicts: one paragraph per
  objective. "Where, not how many" (the blocks localization picks beat as many other blocks) is
  said only when localized beats both random-K and bottom-K on success without losing
  preservation to either."""
  out = []
  for objective, s in summary.items():
    said = {"higher": [], "lower": [], "no difference shown": [], "unsaid": []}
    for control, row in s["localized_minus"].items():
      for key in ("success", "preservation"):
        v = paired.verdict(row[key])
        said[v if v in said else "unsaid"].append(f"{key} vs {control} ({cell(row[key])}, "
                                                  f"{row[key]['pairs']} pairs)")
    parts = [f"Localized {word}: " + "; ".join(items) + "." for word, items in
             (("higher", said["higher"]), ("lower", said["lower"])) if items]
    if said["no difference shown"]:
      parts.append("No difference shown: " + "; ".join(said["no difference shown"]) + ".")
    if said["unsaid"]:
      parts.append(f"Not yet said (fewer than {paired.MIN_PAIRS} pairs or no interval): "
                   + "; ".join(said["unsaid"]) + ".")
    verdicts = {(c, k): paired.verdict(r[k]) for c, r in s["localized_minus"].items() for k in r}
    # Each condition the claim needs, named where it fails so the reader sees why it is not said.
    missing = []
    for control in ("random-K", "bottom-K"):
      success, kept = verdicts.get((control, "success")), verdicts.get((control, "preservation"))
      if success != "higher":
        missing.append(f"success {'lower than' if success == 'lower' else 'not shown above'} {control}'s")
      if kept == "lower":
        missing.append(f"preservation lower than {control}'s")
      elif kept not in ("higher", "no difference shown"):
        missing.append(f"preservation vs {control} not yet said")
    claim = (f"that for {objective} the blocks localization picks do better than as many other "
             "blocks (random-K and bottom-K)")
    parts.append(f"Supported: {claim}." if not missing else
                 f"Not shown: {claim}; localized {', '.join(missing)}.")
    out.append(f"**{objective}** (step {s['variants']['localized']['curve'][-1]['step']}). "
               + " ".join(parts) if "localized" in s["variants"] else f"**{objective}**: no localized runs.")
  return "\n\n".join(out)


def table(summary: dict) -> str:
  """Markdown: per objective, each variant's curve, then the paired comparisons at the last step."""
  lines = []
  for objective, s in summary.items():
    steps = [p["step"] for p in next(iter(s["variants"].values()))["curve"]]
    lines += [f"**{objective}** ({len(s['concepts'])} concepts: {', '.join(s['concepts'])}; seeds "
              f"{', '.join(map(str, s['seeds']))}). Success / preservation, mean over runs [95 % "
              f"bootstrap interval, from {paired.MIN_PAIRS} runs on; below that, n]:", "",
              "| variant | lr | runs | " + " | ".join(f"step {t}: success" for t in steps) + " | "
              + " | ".join(f"step {t}: preservation" for t in steps) + " |",
              "|---|---|---|" + "---|" * (2 * len(steps))]
    for variant, v in s["variants"].items():
      lines.append(f"| {variant} | {v['learning_rate']:g} | {v['runs']} | "
                   + " | ".join(cell(p["success"], n=v["runs"]) for p in v["curve"]) + " | "
                   + " | ".join(cell(p["preservation"], n=v["runs"]) for p in v["curve"]) + " |")
    if s["localized_minus"]:
      lines += ["", f"Localized minus each control at step {steps[-1]}, paired by concept and seed:", "",
                "| control | pairs | success | preservation |", "|---|---|---|---|"]
      for control, row in s["localized_minus"].items():
        lines.append(f"| {control} | {row['success']['pairs']} | {cell(row['success'])} "
                     f"({verdict(row['success'])}) | {cell(row['preservation'])} "
                     f"({verdict(row['preservation'])}) |")
    lines.append("")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Success against preservation over steps, one panel per objective, one line per variant."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 4), squeeze=False)
  for ax, (objective, s) in zip(axes[0], summary.items()):
    for variant, v in s["variants"].items():
      xs = [p["preservation"]["mean"] for p in v["curve"]]
      ys = [p["success"]["mean"] for p in v["curve"]]
      line, = ax.plot(xs, ys, marker="o", label=f"{variant} (lr {v['learning_rate']:g})")
      # The curve's direction: the last step drawn larger and labelled with its step.
      ax.plot(xs[-1:], ys[-1:], marker="s", markersize=9, color=line.get_color())
      ax.annotate(f"step {v['curve'][-1]['step']}", (xs[-1], ys[-1]), textcoords="offset points",
                  xytext=(6, 4), fontsize=7, color=line.get_color())
      for p in v["curve"]:
        for key, horizontal in (("success", False), ("preservation", True)):
          if p[key]["interval"] and v["runs"] >= paired.MIN_PAIRS:   # as the table prints them
            lo, hi = p[key]["interval"]
            if horizontal:
              ax.plot([lo, hi], [p["success"]["mean"]] * 2, color=line.get_color(), alpha=0.3)
            else:
              ax.plot([p["preservation"]["mean"]] * 2, [lo, hi], color=line.get_color(), alpha=0.3)
    ax.set_xlabel("preservation"), ax.set_ylabel("success"), ax.set_title(objective)
    ax.grid(alpha=0.3), ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--scores", default="runs/localize_shapes_full/scores.json",
                      help="a localize.py run's scores.json on the shipped model (made if missing)")
  parser.add_argument("--out", default="runs/finetune_controls", help="training workdirs (resumable)")
  parser.add_argument("--units", default="results/finetune_runs")
  parser.add_argument("--result", default="results/finetune_controls.json")
  parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
  parser.add_argument("--objectives", nargs="+", choices=sorted(OBJECTIVES), default=list(OBJECTIVES))
  parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
  parser.add_argument("--concepts", type=int, default=3, help="the first N concepts of each objective")
  parser.add_argument("--rescore", action="store_true", help="no training: the summary from the units")
  args = parser.parse_args(argv)
  preset = PRESETS[args.preset]
  scores = None if args.rescore else block_scores(args.scores)
  os.makedirs(args.units, exist_ok=True)
  runner = Runner(args, preset, scores)
  rates, units, bases = {}, [], []
  for objective in args.objectives:
    concepts = concepts_of(objective)[:args.concepts]
    if not args.rescore:
      bases += [runner.base(objective, cat, c) for cat, c in concepts]
      category, concept = concepts[0]
      tuning = {v: [runner.unit(objective, category, concept, v, 0, lr) for lr in preset["grid"]]
                for v in args.variants}
      rates[objective] = {v: max(runs, key=criterion)["learning_rate"] for v, runs in tuning.items()}
      for seed in preset["seeds"]:
        for category, concept in concepts:
          for variant in args.variants:
            runner.unit(objective, category, concept, variant, seed, rates[objective][variant])
  stored = [files.read_json(os.path.join(args.units, f)) for f in sorted(os.listdir(args.units))
            if f.endswith(".json")]
  bases = [u for u in stored if u["variant"] == "base model"]
  units = [u for u in stored if u["variant"] != "base model" and u["objective"] in args.objectives]
  for objective in dict.fromkeys(u["objective"] for u in units):
    if objective not in rates:      # --rescore: the tuning runs decide again
      tuning = [u for u in units if u["objective"] == objective and u["seed"] == 0
                and u["concept"] == concepts_of(objective)[0][1]]
      rates[objective] = {v: max((u for u in tuning if u["variant"] == v), key=criterion)["learning_rate"]
                          for v in dict.fromkeys(u["variant"] for u in tuning)}
  units = [u for u in units if u["variant"] in rates.get(u["objective"], {})]
  summary = summarize(units, bases, rates)
  result = {"preset": args.preset, **{k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()},
            "k": K, "criterion": CRITERION, "learning_rates": rates, "scores": args.scores,
            "command": "python -m studies.finetune_controls", "summary": summary}
  write_result(args.result, result)
  plot(summary, os.path.splitext(args.result)[0] + ".png")
  print(table(summary))
  return result


if __name__ == "__main__":
  main()
