"""How well the Shapes model draws what captions ask: the judge's accuracy per category.

    python -m dit_jax.shapes.evaluate  --num 256 --split heldout
    python -m dit_jax.shapes.evaluate  --num 256 --split train --guidance 8    # a diagnosis

Captions come from held-out scenes (attribute combinations never used in training) by default.
Writes <folder>/generation_eval.json (the model card's protocol: held-out, 20 steps, guidance 4.5)
or, for any other setting, generation_eval_<split>_<steps>steps_g<guidance>[_seed<seed>].json, so a
diagnosis never replaces the model's record; and a grid of the first images (samples.png).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from dit_jax import files
from dit_jax.shapes.judge import ShapesJudge
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes import render, world
from dit_jax.shapes import ASSETS


def evaluate(folder: str, num: int, split: str, steps: int, guidance: float, seed: int = 123,
             batch: int = 32) -> tuple[dict, np.ndarray]:
  pipe = Text2Image("pixart", folder, num_steps=steps, guidance_scale=guidance,
                    max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH)
  prompts = [world.caption(s) for s in world.scenes(seed, num, split)]
  images = pipe.generate(prompts, 32, 32, batch, desc="generating")
  accuracy = ShapesJudge(os.path.join(folder, "judge")).category_accuracy(images, prompts)
  # The record names what it judged, so it cannot be taken for the record of other weights.
  sha = lambda *path: files.sha256(os.path.join(folder, *path))
  return {"split": split, "num_images": num, "seed": seed, "steps": steps, "guidance_scale": guidance,
          "accuracy": accuracy, "mean": float(np.mean(list(accuracy.values()))),
          "transformer_sha256": sha("transformer", "diffusion_pytorch_model.safetensors"),
          "judge_sha256": sha("judge", "params.safetensors")}, images


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--folder", default=str(ASSETS))
  parser.add_argument("--num", type=int, default=256)
  parser.add_argument("--split", choices=("heldout", "train"), default="heldout")
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--guidance", type=float, default=4.5)
  parser.add_argument("--seed", type=int, default=123, help="draws the captions (image i is sampled from noise seed i)")
  args = parser.parse_args(argv)
  result, images = evaluate(args.folder, args.num, args.split, args.steps, args.guidance, args.seed)
  protocol = (args.split, args.steps, args.guidance) == ("heldout", 20, 4.5)
  suffix = "" if protocol else f"_{args.split}_{args.steps}steps_g{args.guidance:g}"
  suffix += "" if args.seed == 123 else f"_seed{args.seed}"
  with open(os.path.join(args.folder, f"generation_eval{suffix}.json"), "w") as f:
    json.dump(result, f, indent=2)
  render.save_grid(images[:32].astype(np.float32) / 127.5 - 1,
                   os.path.join(args.folder, f"samples{suffix}.png"))
  print(json.dumps(result, indent=2))


if __name__ == "__main__":
  main()
