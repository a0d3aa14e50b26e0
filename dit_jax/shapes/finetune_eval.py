"""Localized vs full fine-tuning on the Shapes world, for personalization and unlearning.

    python localize.py --config configs/shapes.py          # scores.json: which blocks hold what
    python -m dit_jax.shapes.finetune_eval --scores runs/localize_shapes/scores.json

For each objective, trains (through train.py, so runs resume) once with every block and once with
the top-K blocks of the character category's concept in `--scores`, then generates and judges:

  personalization  concept: renders the planted character's look (shape, colour and texture all
                   right) from prompts naming it; preserved: judge accuracy on ordinary captions.
  unlearning       (concept ablation and ESD) of --unlearn (category:concept). concept: the judge
                   still sees it (chance is 1 / the category's size); neighbours: the category's
                   other concepts; preserved: the other categories' accuracy on ordinary captions
                   that do not name the concept.

Also reports trainable parameters, gradient + Adam state bytes, the step's peak memory (XLA's
memory plan) and step time. Writes table.json, table.md and finetune.png to --out.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from dit_jax import blocks as blocks_lib
from dit_jax.shapes.judge import ShapesJudge
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes import ASSETS, pixel_judge, tasks, world

OBJECTIVES = {"personalization": tasks.personalize_config, "ablation": tasks.unlearn_config,
              "esd": tasks.unlearn_config}
PLANTED = "quib"    # personalization's new character; its blocks come from the character category


def unrelated_scenes(n: int, category: str | None = None, concept: str | None = None) -> list:
  """n fixed training scenes whose captions do not name `concept` of `category` (any, if None)."""
  scenes = [s for s in world.scenes(7, 8 * n, "train")
            if concept is None or world.concepts_in(s).get(category) != concept][:n]
  if len(scenes) < n:
    raise ValueError(f"fewer than {n} training scenes leave out {category}={concept!r}")
  return scenes


class Generator:
  """The Shapes pipeline with swappable transformer weights; the judge on its images."""

  def __init__(self, folder: str, num: int, steps: int = 20, guidance: float = 4.5,
               cache_dir: str | None = None):
    # cache_dir: encoded prompts on disk, for a study that measures the same prompts many times.
    self.pipe = Text2Image("pixart", folder, num_steps=steps, guidance_scale=guidance,
                           max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH, cache_dir=cache_dir)
    self.judge = ShapesJudge(os.path.join(folder, "judge"))
    # The rule-based second judge (colour, position, place), independent of the learned one.
    self.second = pixel_judge.PixelJudge()
    self.num = num

  def use(self, transformer: str | None) -> None:
    self.pipe.use_transformer(transformer)

  def images(self, prompts: list[str]) -> np.ndarray:
    return self.pipe.generate(prompts, 32, 32)

  def unrelated_prompts(self, category: str | None = None, concept: str | None = None) -> list[str]:
    """2 x num ordinary training captions that do not name `concept` of `category`."""
    return [world.caption(s) for s in unrelated_scenes(2 * self.num, category, concept)]

  def preserved(self, category: str | None = None, concept: str | None = None,
                images: np.ndarray | None = None) -> float:
    """Mean judge accuracy on unrelated_prompts over the categories other than `category` (all six
    when None): what fine-tuning on `concept` should leave alone. images: those prompts' images,
    where the caller has them already (generated here otherwise)."""
    prompts = self.unrelated_prompts(category, concept)
    accuracy = self.judge.category_accuracy(self.images(prompts) if images is None else images, prompts)
    return float(np.mean([v for c, v in accuracy.items() if c != category]))

  def read_as(self, category: str, concept: str, target: str) -> float:
    """Fraction of images from num prompts naming `concept` whose `category` the judge reads as
    `target`: how far a concept personalized to another's look draws it."""
    names = self.judge.predictions(self.images(self.naming_prompts(category, [concept])))[category].names
    return float(np.mean([name == target for name in names]))

  def look_accuracy(self, name: str) -> float:
    """Fraction of images from prompts naming the planted `name` that show its whole look."""
    return self.look_readings(name)["accuracy"]

  def look_readings(self, name: str) -> dict:
    """The planted `name`'s look on the same images read by both judges: "accuracy" (the learned
    judge, the whole look) and "second_judge": the look's colour, the one part of it the pixel
    judge reads (shape and texture need a model of shape), as the share of images each judge
    reads in that colour, and their image-by-image agreement on it."""
    scenes = world.planted_scenes(name, self.num, seed=100)
    images = self.images([world.caption(s) for s in scenes])
    colour = world.planted_look(name)[1]
    read = {j: np.array(judge.predictions(images)["colour"].names) == colour
            for j, judge in (("first", self.judge), ("second", self.second))}
    return {"accuracy": float(np.mean(self.look_hits(images, name))),
            "second_judge": {"judge": "pixel judge", "part": "colour", "colour": colour,
                             **{j: float(hit.mean()) for j, hit in read.items()},
                             "agreement": float(np.mean(read["first"] == read["second"]))}}

  def look_hits(self, images: np.ndarray, name: str) -> np.ndarray:
    """(N,) bool: image i shows the planted `name`'s whole look (shape, colour and texture)."""
    heads = self.judge.predictions(images)
    look = world.planted_look(name)
    return np.array([all(heads[c].names[i] == v for c, v in zip(("shape", "colour", "texture"), look))
                     for i in range(len(images))])

  def concept_accuracy(self, category: str, names: list[str]) -> float:
    """Judge accuracy on `category` for prompts naming each of `names`."""
    prompts = self.naming_prompts(category, names)
    return self.judge.category_accuracy(self.images(prompts), prompts)[category]

  def naming_prompts(self, category: str, names: list[str]) -> list[str]:
    """Fixed prompts naming each of `names` (num in all, at least 8 per name), other attributes
    random: what success and the neighbours' accuracy are read on."""
    per = max(self.num // len(names), 8)
    return [p for n in names for p, _ in world.prompt_pairs(category, n, per, seed=100)]


def train_cost(workdir: str) -> dict:
  with open(os.path.join(workdir, "selection.json")) as f:
    selection = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  # The first record includes compilation; time per step over the rest.
  (s0, t0), (s1, t1) = (rows[0]["step"], rows[0]["seconds"]), (rows[-1]["step"], rows[-1]["seconds"])
  trainable = selection["trainable_parameters"]
  return {"blocks": selection["blocks"], "trainable_parameters": trainable,
          "grad_and_adam_bytes": 3 * 4 * trainable,   # float32 gradient + two Adam moments
          # XLA's plan (training.TrainStep); None where the run skipped it (config.memory_plan)
          "step_peak_bytes": selection.get("step_memory_bytes", {}).get("peak"),
          "step_seconds": (t1 - t0) / max(s1 - s0, 1)}


def evaluate(out: str, scores: str, k: int, steps: int, num: int, objectives=tuple(OBJECTIVES),
             unlearn: tuple[str, str] = ("position", "on the left"), folder: str = str(ASSETS),
             learning_rate: float | None = None) -> list[dict]:
  gen = Generator(folder, num)
  rows = []
  for objective in objectives:
    if objective == "personalization":
      category, concept = "character", PLANTED
      source = "zork"                 # no scores exist for a concept the model does not know yet
      measure = lambda: gen.look_accuracy(PLANTED)
      preserved = lambda: gen.preserved()        # every category: the new name is in no caption
      extra = {"concept": PLANTED}
    else:
      category, concept = unlearn
      source = concept
      measure = lambda: gen.concept_accuracy(category, [concept])
      preserved = lambda: gen.preserved(category, concept)   # the other categories
      extra = {"concept": concept, "category": category, "objective": objective}
    if learning_rate:
      extra["learning_rate"] = learning_rate
    neighbours = [n for n in world.CONCEPTS[category] if n != concept]
    local_blocks = ",".join(map(str, blocks_lib.top_blocks_from_scores(scores, source, k)))
    gen.use(None)
    rows.append({"objective": objective, "concept": concept, "variant": "base model",
                 "concept_accuracy": measure(),
                 "neighbour_accuracy": gen.concept_accuracy(category, neighbours),
                 "preserved_accuracy": preserved()})
    for variant, blocks in (("localized", local_blocks), ("full", "all")):
      workdir = os.path.join(out, f"{objective}_{variant}")
      tasks.run_finetune(OBJECTIVES[objective](), workdir, blocks, steps, **extra)
      gen.use(os.path.join(workdir, "transformer"))
      rows.append({"objective": objective, "concept": concept, "variant": variant,
                   "concept_accuracy": measure(),
                   "neighbour_accuracy": gen.concept_accuracy(category, neighbours),
                   "preserved_accuracy": preserved(), **train_cost(workdir)})
      print(json.dumps(rows[-1]))
  return rows


def write_report(rows: list[dict], out: str) -> None:
  with open(os.path.join(out, "table.json"), "w") as f:
    json.dump(rows, f, indent=2)
  cols = ["objective", "concept", "variant", "blocks", "concept_accuracy", "neighbour_accuracy",
          "preserved_accuracy", "trainable_parameters", "grad_and_adam_bytes", "step_peak_bytes",
          "step_seconds"]
  fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v if v is not None else "")
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
  with open(os.path.join(out, "table.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  shown = len({r["objective"] for r in rows})
  fig, axes = plt.subplots(1, shown, figsize=(5 * shown, 3.5), squeeze=False)
  axes = axes[0]
  for ax, objective in zip(np.atleast_1d(axes), dict.fromkeys(r["objective"] for r in rows)):
    mine = [r for r in rows if r["objective"] == objective]
    x = np.arange(len(mine))
    for j, (key, label) in enumerate([("concept_accuracy", "concept"), ("neighbour_accuracy", "neighbours"),
                                      ("preserved_accuracy", "unrelated")]):
      ax.bar(x + (j - 1) * 0.27, [r[key] for r in mine], 0.27, label=label)
    ax.set_xticks(x, [r["variant"] for r in mine]), ax.set_ylim(0, 1), ax.set_title(objective)
    ax.set_ylabel("judge accuracy"), ax.grid(axis="y", alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "finetune.png"), dpi=120)
  plt.close(fig)


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
  """The module docstring keeps its layout, and every option shows its default (an option whose
  default is None says in its own help what it falls back to)."""

  def _get_help_string(self, action):
    return action.help if action.default is None else super()._get_help_string(action)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
  parser.add_argument("--scores", default="runs/localize_shapes/scores.json",
                      help="a localize.py run's scores.json: which blocks hold what")
  parser.add_argument("--out", default="runs/finetune_eval", help="table.json, table.md, finetune.png")
  parser.add_argument("--k", type=int, default=4, help="blocks the localized runs train (top-K)")
  parser.add_argument("--steps", type=int, default=300, help="training steps of every run")
  parser.add_argument("--num", type=int, default=64, help="images per measurement")
  parser.add_argument("--objectives", nargs="+", choices=sorted(OBJECTIVES), default=list(OBJECTIVES),
                      help="the fine-tunings to compare")
  parser.add_argument("--unlearn", default="position:on the left", help="category:concept to unlearn")
  parser.add_argument("--learning-rate", type=float, default=None, help="default: the configs' (3e-4)")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  category, _, concept = args.unlearn.partition(":")
  if concept not in world.CONCEPTS.get(category, ()):
    raise SystemExit(f"--unlearn={args.unlearn!r}: use category:concept, e.g. colour:red")
  write_report(evaluate(args.out, args.scores, args.k, args.steps, args.num, args.objectives,
                        (category, concept), learning_rate=args.learning_rate), args.out)


if __name__ == "__main__":
  main()
