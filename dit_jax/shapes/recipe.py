"""Side-by-side training runs of the Shapes model: one change at a time against the shipped recipe,
scored by the judge's per-category accuracy on held-out captions (the model card's ablation table).

    python -m dit_jax.shapes.recipe --variant baseline --steps 1500
    python -m dit_jax.shapes.recipe --variant min_snr --steps 1500
    python -m dit_jax.shapes.recipe --table          # the rows so far, as the model card prints them

Each variant trains from scratch with the same seed in runs/recipe/<variant>_<steps> (a pipeline
folder of its own: the shipped assets are never touched), resumes when rerun, and appends its row
to results/shapes_recipe.json. Minutes are training wall-clock on the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import time

from dit_jax import files
from dit_jax.train.loop import MetricsLog
from dit_jax.train import job as train_job
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes import evaluate as shapes_evaluate
from dit_jax.shapes.tasks import pretrain_config

RESULTS = "results/shapes_recipe.json"

# name -> (what changes, config overrides). One change per row against "baseline".
VARIANTS = {
    "baseline": ("the shipped recipe (v-prediction, cosine, batch 32, lr 1e-3, 12 blocks x 96)", {}),
    "min_snr": ("Min-SNR-5 loss weighting", {"weighting_scheme": "min_snr"}),
    "wide": ("width 128 (4 heads x 32)", {"transformer.num_attention_heads": 4,
                                          "transformer.cross_attention_dim": 128}),
    "patch2": ("2x2 pixel patches (256 tokens)", {"transformer.patch_size": 2}),
    "less_dropout": ("neutral dropout 0.05 per attribute (was 0.15)", {"p_neutral": 0.05}),
    "lr_3e-3": ("learning rate 3e-3", {"learning_rate": 3e-3}),
    "batch64": ("batch 64 (the same steps see twice the images)", {"batch_size": 64}),
    "linear_v": ("PixArt's linear beta schedule, v-prediction", {"scheduler.beta_schedule": "linear"}),
    "more_images": ("64,000 rendered training images (was 16,000)", {"num_images": 64000}),
    "no_ema": ("no EMA: the raw weights exported (was EMA 0.999)", {"ema_decay": 0.0}),
}


def variant_config(name: str, steps: int, root: str):
  if name not in VARIANTS:
    raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
  config = pretrain_config()
  workdir = os.path.join(root, f"{name}_{steps}")
  folder = os.path.join(workdir, "pipeline")
  shapes_model.copy_shipped_parts(folder)
  config.checkpoint = folder
  config.export_dir = os.path.join(folder, "transformer")
  config.steps = steps
  config.workdir = workdir
  for key, value in VARIANTS[name][1].items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if leaf not in node and path != ["scheduler"]:
      raise KeyError(f"variant {name}: the pretraining config has no key {key!r}")
    node[leaf] = value
  return config, workdir, folder


def run(name: str, steps: int, num: int, root: str) -> dict:
  config, workdir, folder = variant_config(name, steps, root)
  began = time.time()
  train_job.run(config, workdir)
  metrics = MetricsLog(os.path.join(workdir, "metrics.jsonl")).records()
  result, _ = shapes_evaluate.evaluate(folder, num, "heldout", 20, 4.5)
  row = {"variant": name, "change": VARIANTS[name][0], "steps": steps, "num_images": num,
         "accuracy": result["accuracy"], "mean": result["mean"],
         "final_loss": sum(m["loss"] for m in metrics[-8:]) / len(metrics[-8:]),
         "train_minutes": metrics[-1]["seconds"] / 60,
         "command": f"python -m dit_jax.shapes.recipe --variant {name} --steps {steps} --num {num}",
         "wall_minutes_this_call": (time.time() - began) / 60}
  rows = [r for r in (files.read_json(RESULTS) if os.path.exists(RESULTS) else [])
          if (r["variant"], r["steps"]) != (name, steps)]
  files.write_json(RESULTS, rows + [row])
  return row


def table(rows: list[dict]) -> str:
  cats = ("shape", "colour", "texture", "place", "position", "character")
  lines = ["| variant | change | steps | " + " | ".join(cats) + " | mean | loss | minutes |",
           "|---" * (len(cats) + 6) + "|"]
  for r in rows:
    lines.append(f"| {r['variant']} | {r['change']} | {r['steps']} | "
                 + " | ".join(f"{r['accuracy'][c]:.2f}" for c in cats)
                 + f" | {r['mean']:.3f} | {r['final_loss']:.4f} | {r['train_minutes']:.0f} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--variant", choices=tuple(VARIANTS))
  parser.add_argument("--steps", type=int, default=1500)
  parser.add_argument("--num", type=int, default=256, help="held-out images judged")
  parser.add_argument("--root", default="runs/recipe")
  parser.add_argument("--table", action="store_true", help="print the rows recorded so far")
  args = parser.parse_args(argv)
  if args.variant:
    print(json.dumps(run(args.variant, args.steps, args.num, args.root), indent=2))
  if args.table or not args.variant:
    print(table(files.read_json(RESULTS) if os.path.exists(RESULTS) else []))


if __name__ == "__main__":
  main()
