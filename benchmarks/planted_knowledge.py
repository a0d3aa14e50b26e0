"""Planted knowledge: does localization find the blocks that were taught a new concept?

    python -m benchmarks.planted_knowledge                    # 3 block sets x 2 variants
    python -m benchmarks.planted_knowledge --variants blocks --sets 1     # a reduced run
    python -m benchmarks.planted_knowledge --rescore          # the table again from the stored file

For each (block set, reserved name, seed) and variant, fine-tunes only part of the shipped Shapes
model to draw a new character under the reserved name (train.py, configs/shapes_personalize.py):

  blocks  every weight of the set's blocks. Those weights include the cross-attention the score
          reads, so finding the set is partly circular: the planting changes the very numbers that
          rank it.
  mlp     only the feed-forward of the set's blocks: weights the score does not read (in a PixArt
          block the feed-forward comes after the cross-attention, and the name's keys and values
          are frozen). Whatever the score then finds, it finds through later blocks' queries; this
          variant shows where the score's reach ends.

Then it localizes the name on the fine-tuned model (attention contribution of its tokens per block,
with_wo, over prompts x seeds x steps) and reports precision@|set|: the share of the top-|set|
blocks that belong to the set, with the same ranking on the base model and the ranking of the
score's change. Every localizer (dit_jax/localizers: the attention with and without W_O, causal,
bypass, patching) scores the fine-tuned model on the same prompts and seeds, the intervention ones
judging the planted look (the product of the judge's shape, colour and texture probabilities of
it), and gets its own precision@|set| ("localizer_precision"). A set counts only when the planting took: the fine-tuned model draws the
character's whole look (shape, colour and texture, judged) in at least --look-floor of the images
(LOOK_FLOOR: as reliably as the shipped model draws the weakest of its own pretrained characters).
At 300 steps (lr 1e-3) the stored run before this one drew its characters in 0.09 to 0.25 of the
images; the default is 600 steps (1500 for the feed-forward alone, which learns more slowly).
The causal check withholds the name (the neutral "a character" in its place) from the planted
blocks, from the blocks the score found, and from random sets of as many blocks outside the
planted set (the preset's random_draws; 16 of the look accuracy's prompts x 2 noise seeds): the
planted character should vanish with the first and stay with the last.
Writes benchmarks/results/planted_knowledge.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks.timing import write_result
from dit_jax import analysis, judges, localization, localizers
from dit_jax.knowledge import PromptPair
from dit_jax.shapes import ASSETS, tasks, world

SETS = (((1, 5, 9), "quib", 0), ((2, 6, 10), "vexa", 1), ((0, 4, 7), "nolo", 2))
VARIANTS = {"blocks": "", "mlp": "ff"}        # variant -> config.block_parts of the fine-tuning
# The shipped model draws its own pretrained characters' whole look in 0.25 (zork, kiki) to 0.66
# (mira) of 32 images: a planted character counts when it is drawn at least as reliably as the
# weakest of them (chance is 1/144).
LOOK_FLOOR = 0.25
PRESETS = {   # tiny: checks the harness in a few minutes on a CPU, measures nothing
    # The feed-forward alone learns the character more slowly: it gets mlp_steps.
    "full": dict(steps=600, mlp_steps=1500, prompts=16, look_images=32, causal_prompts=16,
                 causal_seeds=2, random_draws=10),
    "tiny": dict(steps=2, mlp_steps=2, prompts=2, look_images=4, causal_prompts=2, causal_seeds=1,
                 random_draws=2),
}


def block_scores(gen, name: str, num_prompts: int, seeds=(0, 1)) -> np.ndarray:
  prompts = [world.caption(s) for s in world.planted_scenes(name, num_prompts, seed=200)]
  scores = localization.concept_scores(gen.pipe, prompts, [name] * len(prompts), seeds, (32, 32),
                                       batch_size=16)
  return scores[..., 0].mean(axis=(0, 1))     # with_wo, mean over prompts x seeds and steps


class PlantedLook(judges.Judge):
  """Presence of the planted `name`: the judge's probability of its shape x colour x texture."""

  def __init__(self, gen, name: str):
    super().__init__()
    self.gen, self.look = gen, world.planted_look(name)

  def _presence(self, images, pairs):
    heads = self.gen.judge.predictions(images)
    probs = [heads[c].probs[:, world.JUDGE_CLASSES[c].index(v)]
             for c, v in zip(("shape", "colour", "texture"), self.look)]
    return np.prod(probs, axis=0)


def localizer_scores(gen, name: str, num_prompts: int, chunk: int, seeds=(0, 1)) -> dict:
  """label -> per-block scores of every localizer for the planted `name`, on block_scores' prompts
  and seeds (the neutral "a character" in the name's place)."""
  scenes = world.planted_scenes(name, num_prompts, seed=200)
  pairs = [PromptPair(world.caption(s), world.caption(s, ("character",)), name, "character")
           for s in scenes]
  judge = PlantedLook(gen, name)
  out = {}
  for localizer in localizers.names():
    record = localizers.get(localizer).score(gen.pipe, pairs, list(seeds), (32, 32), 16,
                                             judge=judge, chunk=chunk)
    out.update(localizers.named_scores(localizer, record.to_dict()))
  return out


def precision(block_scores, planted) -> float:
  top = localization.rank_blocks(np.asarray(block_scores))[:len(planted)]
  return len(set(top.tolist()) & set(planted)) / len(planted)


def causal_check(gen, name: str, planted, found, num_prompts: int, num_seeds: int, draws: int,
                 seed: int) -> dict:
  """Look accuracy of the planted character with its name withheld (the neutral "a character" in
  its place) from the planted blocks, from the found blocks and from random sets outside the
  planted ones; "original": withheld nowhere. Prompts x noise seeds; the same noise for every
  intervention."""
  # The look accuracy's scenes: how often the character is drawn depends much on the prompt's
  # position and place, so "original" here is measured on the prompts that decided whether it counts.
  scenes = world.planted_scenes(name, num_prompts, seed=100)
  prompts = [world.caption(s) for s in scenes]
  neutral = [world.caption(s, ("character",)) for s in scenes]
  n, k = gen.pipe.module.config.num_blocks, len(planted)
  others = [b for b in range(n) if b not in planted]
  ranking = np.array(list(planted) + others)       # "outside the top-k" = outside the planted set
  sets = localization.draw_random_sets(ranking, k, draws, localization.concept_seed(seed, name),
                                       overlap=False)
  plan = [localization.Intervention("none", 0, ()),
          localization.Intervention("top", k, tuple(sorted(planted))),
          localization.Intervention("top", k, tuple(sorted(found)), draw=1)]
  plan += [localization.Intervention("random", k, s, d) for d, s in enumerate(sets)]
  images = localization.run_interventions(gen.pipe, prompts, neutral, list(range(num_seeds)),
                                          (32, 32), plan, chunk=8)
  look = [float(np.mean(gen.look_hits(imgs, name))) for imgs in images]
  return {"original": look[0], "planted": look[1], "found": look[2], "random": look[3:],
          "random_blocks": [list(s) for s in sets], "images": num_prompts * num_seeds}


def score_row(r: dict, look_floor: float) -> None:
  """The row's derived numbers: precisions, whether it counts, the causal verdict."""
  tuned, base = np.asarray(r["scores"]), np.asarray(r["base_scores"])
  planted = r["planted_blocks"]
  r["top_blocks"] = sorted(localization.rank_blocks(tuned)[:len(planted)].tolist())
  r["precision"] = precision(tuned, planted)
  r["base_model_precision"] = precision(base, planted)
  r["change_precision"] = precision(tuned - base, planted)
  r["counted"] = bool(r["look_accuracy"] >= look_floor)
  r["localizer_precision"] = {label: precision(s, planted)
                              for label, s in r.get("localizer_scores", {}).items()}
  causal = r.get("causal")
  if not causal:
    r["causal_holds"] = None
    return
  r["causal_drop_planted"] = causal["original"] - causal["planted"]
  r["causal_drop_random"] = float(np.mean([causal["original"] - x for x in causal["random"]]))
  # The localization verdict's rule (analysis.summarize), with the planted set as the top-K.
  r["causal_holds"] = bool(r["causal_drop_planted"] >= analysis.MIN_TOP_DROP
                           and r["causal_drop_planted"] >= 2 * r["causal_drop_random"])


def summarize(rows: list[dict], look_floor: float = LOOK_FLOOR) -> dict:
  """variant -> sets, counted (planting took), mean precisions and causal holds over counted sets."""
  for r in rows:
    score_row(r, look_floor)
  out = {}
  for variant in dict.fromkeys(r.get("variant", "blocks") for r in rows):
    mine = [r for r in rows if r.get("variant", "blocks") == variant]
    counted = [r for r in mine if r["counted"]]
    mean = lambda key: analysis.mean_or_none([r[key] for r in counted])
    labels = dict.fromkeys(label for r in counted for label in r["localizer_precision"])
    out[variant] = {"sets": len(mine), "counted": len(counted), "look_floor": look_floor,
                    "mean_precision": mean("precision"),
                    "mean_precision_by_localizer": {
                        label: analysis.mean_or_none([r["localizer_precision"].get(label)
                                                      for r in counted
                                                      if label in r["localizer_precision"]])
                        for label in labels},
                    "mean_change_precision": mean("change_precision"),
                    "causal_checked": sum(r["causal_holds"] is not None for r in counted),
                    "causal_holds": sum(bool(r["causal_holds"]) for r in counted)}
  return out


def report(result: dict, path: str) -> None:
  result["summary"] = summarize(result["sets"], result.get("look_floor", LOOK_FLOOR))
  write_result(path, result)
  fmt = lambda v: "-" if v is None else f"{v:.2f}"
  print(f"{'variant':7} {'name':5} {'planted':>11} {'found':>11} {'prec':>5} {'base':>5} "
        f"{'change':>6} {'look':>5} {'counts':>6} {'withheld: none':>14} {'planted':>7} "
        f"{'found':>5} {'random':>6} {'causal':>6}")
  for r in result["sets"]:
    c = r.get("causal") or {}
    print(f"{r.get('variant', 'blocks'):7} {r['name']:5} {str(r['planted_blocks']):>11} "
          f"{str(r['top_blocks']):>11} {r['precision']:5.2f} {r['base_model_precision']:5.2f} "
          f"{r['change_precision']:6.2f} {r['look_accuracy']:5.2f} {str(r['counted']):>6} "
          f"{fmt(c.get('original')):>14} {fmt(c.get('planted')):>7} {fmt(c.get('found')):>5} "
          f"{fmt(np.mean(c['random']) if c else None):>6} {str(r['causal_holds']):>6}")
  for variant, s in result["summary"].items():
    print(f"{variant}: {s['counted']} of {s['sets']} sets took (look >= {s['look_floor']}); over "
          f"them precision@|set| {fmt(s['mean_precision'])}, of the change "
          f"{fmt(s['mean_change_precision'])}; causal check holds in {s['causal_holds']} of "
          f"{s['causal_checked']}")
    if s["mean_precision_by_localizer"]:
      print(f"{variant}: precision@|set| by localizer over the sets that took: " + ", ".join(
          f"{label} {fmt(p)}" for label, p in s["mean_precision_by_localizer"].items()))
  for r in result["sets"]:
    if r["localizer_precision"]:
      print(f"{r.get('variant', 'blocks'):7} {r['name']:5} precision by localizer: " + ", ".join(
          f"{label} {p:.2f}" for label, p in r["localizer_precision"].items()))


def plant(gen, blocks, name: str, seed: int, variant: str, args, preset: dict) -> dict:
  """Fine-tune `variant` of `blocks` to draw `name`; scores before and after, look, causal check."""
  steps = preset["mlp_steps" if variant == "mlp" else "steps"]
  workdir = os.path.join(args.out, f"{variant}_{name}_{'-'.join(map(str, blocks))}_seed{seed}"
                                   f"_steps{steps}")
  gen.use(None)
  base = block_scores(gen, name, preset["prompts"])
  tasks.run_finetune(tasks.personalize_config(), workdir, ",".join(map(str, blocks)), steps,
                     concept=name, seed=seed, learning_rate=args.learning_rate,
                     block_parts=VARIANTS[variant])
  gen.use(os.path.join(workdir, "transformer"))
  tuned = block_scores(gen, name, preset["prompts"])
  found = localization.rank_blocks(tuned)[:len(blocks)].tolist()
  every = localizer_scores(gen, name, preset["prompts"], args.chunk)
  return {"name": name, "seed": seed, "variant": variant, "steps": steps, "planted_blocks": list(blocks),
          "look_accuracy": gen.look_accuracy(name), "scores": tuned.tolist(),
          "base_scores": base.tolist(), "localizer_scores": every,
          "causal": causal_check(gen, name, blocks, found, preset["causal_prompts"],
                                 preset["causal_seeds"], preset["random_draws"], seed)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/planted")
  parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
  parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (preset's)")
  parser.add_argument("--mlp-steps", type=int, default=None, help="the same, feed-forward only")
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  parser.add_argument("--sets", type=int, default=len(SETS), help="the first N block sets")
  parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
  parser.add_argument("--look-floor", type=float, default=LOOK_FLOOR)
  parser.add_argument("--result", default="benchmarks/results/planted_knowledge.json")
  parser.add_argument("--rescore", action="store_true")
  parser.add_argument("--chunk", type=int, default=4, help="localizer runs per compiled call")
  args = parser.parse_args(argv)
  if args.rescore:
    with open(args.result) as f:
      return report(json.load(f), args.result)
  from dit_jax.shapes.finetune_eval import Generator
  preset = dict(PRESETS[args.preset], **{k: v for k, v in (("steps", args.steps),
                                                             ("mlp_steps", args.mlp_steps)) if v})
  gen = Generator(str(ASSETS), num=preset["look_images"])
  rows = [plant(gen, blocks, name, seed, variant, args, preset)
          for variant in args.variants for blocks, name, seed in SETS[:args.sets]]
  report({"preset": args.preset, **preset, "block_sets": args.sets, "variants": args.variants,
          "learning_rate": args.learning_rate,
          "look_floor": args.look_floor, "sets": rows, "target": 0.8}, args.result)


if __name__ == "__main__":
  main()
