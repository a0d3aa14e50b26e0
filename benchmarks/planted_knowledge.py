"""Planted knowledge: does localization find the blocks that were taught a new concept?

    python -m benchmarks.planted_knowledge                    # 3 block sets, ~10 min on 2 CPU cores

For each (block set, reserved name, seed), fine-tunes only that block set of the shipped Shapes
model to draw a new character under the reserved name (train.py, configs/shapes_personalize.py),
then localizes the name on the fine-tuned model (attention contribution of its tokens per block,
with_wo, over prompts x seeds x steps) and reports precision@|set|: the share of the top-|set|
blocks that belong to the set. Also reports the same ranking computed on the base model (what the
frozen text embedding alone would give), the ranking of the score *change* (fine-tuned minus base:
localizing what fine-tuning added), and whether the fine-tuned model draws the character.
Planting strength matters: at lr 3e-4 x 200 steps the name's new attention in the planted blocks
stayed below blocks 3 and 4, which attend to every unknown name already in the base model
(precision 0.56); the default is lr 1e-3 x 300 steps.
Writes benchmarks/results/planted_knowledge.json and prints a table; `--rescore` recomputes the
precisions and the table from that file's stored scores without training again.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from benchmarks.timing import write_result
from dit_jax import localization
from dit_jax.shapes import world
from dit_jax.shapes import ASSETS, tasks
from dit_jax.shapes.finetune_eval import Generator

SETS = (((1, 5, 9), "quib", 0), ((2, 6, 10), "vexa", 1), ((0, 4, 7), "nolo", 2))


def block_scores(gen: Generator, name: str, num_prompts: int, seeds=(0, 1)) -> np.ndarray:
  prompts = [world.caption(s) for s in world.planted_scenes(name, num_prompts, seed=200)]
  scores = localization.concept_scores(gen.pipe, prompts, [name] * len(prompts), seeds, (32, 32),
                                       batch_size=16)
  return scores[..., 0].mean(axis=(0, 1))     # with_wo, mean over prompts x seeds and steps


def precision(block_scores, planted) -> float:
  top = localization.rank_blocks(np.asarray(block_scores))[:len(planted)]
  return len(set(top.tolist()) & set(planted)) / len(planted)


def score_rows(rows: list[dict]) -> None:
  for r in rows:
    tuned, base = np.asarray(r["scores"]), np.asarray(r["base_scores"])
    r["top_blocks"] = sorted(localization.rank_blocks(tuned)[:len(r["planted_blocks"])].tolist())
    r["precision"] = precision(tuned, r["planted_blocks"])
    r["base_model_precision"] = precision(base, r["planted_blocks"])
    r["change_precision"] = precision(tuned - base, r["planted_blocks"])


def report(result: dict, path: str) -> None:
  rows = result["sets"]
  score_rows(rows)
  result["mean_precision"] = float(np.mean([r["precision"] for r in rows]))
  result["mean_change_precision"] = float(np.mean([r["change_precision"] for r in rows]))
  write_result(path, result)
  print(f"{'name':6} {'planted':>11} {'found':>11} {'precision':>9} {'base':>6} {'change':>7} {'look acc':>8}")
  for r in rows:
    print(f"{r['name']:6} {str(r['planted_blocks']):>11} {str(r['top_blocks']):>11} "
          f"{r['precision']:9.2f} {r['base_model_precision']:6.2f} {r['change_precision']:7.2f} "
          f"{r['look_accuracy']:8.2f}")
  print(f"mean precision@|set| = {result['mean_precision']:.2f}, ranking the change from the base "
        f"model: {result['mean_change_precision']:.2f} (target >= 0.8)")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default="runs/planted")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--prompts", type=int, default=16)
  parser.add_argument("--learning-rate", type=float, default=1e-3)
  parser.add_argument("--result", default="benchmarks/results/planted_knowledge.json")
  parser.add_argument("--rescore", action="store_true")
  args = parser.parse_args(argv)
  if args.rescore:
    with open(args.result) as f:
      return report(json.load(f), args.result)
  gen = Generator(str(ASSETS), num=32)
  rows = []
  for blocks, name, seed in SETS:
    workdir = os.path.join(args.out, f"{name}_{'-'.join(map(str, blocks))}_seed{seed}")
    gen.use(None)
    base = block_scores(gen, name, args.prompts)
    tasks.run_finetune(tasks.personalize_config(), workdir, ",".join(map(str, blocks)), args.steps,
                       concept=name, seed=seed, learning_rate=args.learning_rate)
    gen.use(os.path.join(workdir, "transformer"))
    tuned = block_scores(gen, name, args.prompts)
    rows.append({"name": name, "seed": seed, "planted_blocks": list(blocks),
                 "look_accuracy": gen.look_accuracy(name),
                 "scores": tuned.tolist(), "base_scores": base.tolist()})
  report({"steps": args.steps, "learning_rate": args.learning_rate, "prompts": args.prompts,
          "sets": rows, "target": 0.8}, args.result)


if __name__ == "__main__":
  main()
