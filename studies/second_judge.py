"""How far the learned Shapes judge and the rule-based pixel judge agree, per category.

    python -m studies.second_judge            # writes results/second_judge.json

The pixel judge (dit_jax/shapes/pixel_judge.py) reads colour, position and place with no learned
parameter. Two checks, per category it reads:

  renders     both judges against the renderer's truth on `--renders` rendered scenes (every
              caption kind, held-out combinations included): the pixel judge's own accuracy.
  agreement   both judges on images the shipped model generates (20 steps, guidance 4.5, image i
              from noise seed i, as dit_jax/shapes/evaluate.py):
                captioned  the model card's held-out captions (evaluate.py's, seed 123);
                neutral    per category, `--per-category` captions with that category's concept
                           dropped, so the model chooses it (what a localization's neutral prompt
                           and a removed concept look like).
              Per set and pooled: n, agreeing images, the rate with its Clopper-Pearson 95%
              interval, Cohen's kappa, the confusion counts (learned judge's class in rows), each
              judge's accuracy against the caption where it names the category, and the first
              disagreeing images. And presence as dit_jax/shapes/confirm.py decides it, of the
              concepts the caption names (captioned) or of the concept dropped (neutral: what a
              localization counts as the concept surviving): counts, and agreement on read /
              not read.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from dit_jax import files
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.shapes import ASSETS, render, world
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.confirm import agreement, asks_from_prompts, confirm
from dit_jax.shapes.pixel_judge import CATEGORIES, PixelJudge
from dit_jax.shapes.judge import ShapesJudge, named_concepts
from dit_jax.verdict.stats import clopper_pearson

RESULT = os.path.join("results", "second_judge.json")
STEPS, GUIDANCE = 20, 4.5      # the model card's protocol (dit_jax/shapes/evaluate.py)
SHOWN_DISAGREEMENTS = 10


def neutral_captions(category: str, n: int, seed: int) -> tuple[list[str], list[dict]]:
  """n held-out captions whose `category` concept is dropped, and per caption {category: the
  concept dropped} (deterministic in seed)."""
  scenes = [s for s in world.scenes(seed, 8 * n, "heldout") if category in world.concepts_in(s)]
  if len(scenes) < n:
    raise ValueError(f"fewer than {n} held-out scenes name a {category}")
  return ([world.neutral_caption(s, category) for s in scenes[:n]],
          [{category: world.concepts_in(s)[category]} for s in scenes[:n]])


def presence(images, asks, learned, pixel) -> dict:
  """Per category asked: confirm()'s counts and the two judges' agreement on "the asked concept
  is read" (absent / present)."""
  check = confirm(images, asks, learned, pixel)
  out = check.summary()
  for c in out:
    out[c]["agreement"] = agreement(check.first[c].astype(int), check.second[c].astype(int),
                                    ("absent", "present"))
  return out


def accuracy_against(names: list[str], prompts: list[str], category: str) -> dict:
  """A judge's hits on the images whose caption names `category`."""
  rows = [(i, named_concepts(p)[category]) for i, p in enumerate(prompts)
          if category in named_concepts(p)]
  hits = sum(names[i] == k for i, k in rows)
  return {"n": len(rows), "hits": int(hits), "accuracy": hits / len(rows) if rows else None,
          "interval": clopper_pearson(hits, len(rows)) if rows else None}


def compare(first, second, prompts: list[str]) -> dict:
  """Per category: agreement of the two judges' readings and each one's accuracy."""
  out = {}
  for c in CATEGORIES:
    a, b = first[c], second[c]
    row = agreement(a.labels, b.labels, a.classes)
    row["learned_accuracy"] = accuracy_against(a.names, prompts, c)
    row["pixel_accuracy"] = accuracy_against(b.names, prompts, c)
    row["disagreements"] = [{"image": int(i), "caption": prompts[i], "learned": a.names[i],
                             "pixel": b.names[i]}
                            for i in np.flatnonzero(a.labels != b.labels)[:SHOWN_DISAGREEMENTS]]
    out[c] = row
  return out


def renders_check(n: int, seed: int, learned: ShapesJudge, pixel: PixelJudge) -> dict:
  scenes = world.scenes(seed, n, "any")
  images = render.render_batch(scenes)
  heads = {"learned": learned.model(images), "pixel": pixel(images)}
  out = {}
  for c in CATEGORIES:
    truth = np.array([s.labels()[c] for s in scenes])
    out[c] = {}
    for name, head in heads.items():
      hits = int((head[c].labels == truth).sum())
      out[c][name] = {"n": n, "hits": hits, "accuracy": hits / n,
                      "interval": clopper_pearson(hits, n)}
  return {"scenes": f"world.scenes({seed}, {n}, 'any')", "categories": out}


def study(folder: str = str(ASSETS), num: int = 256, per_category: int = 64, renders: int = 1024,
          seed: int = 123, neutral_seed: int = 124, batch: int = 32) -> dict:
  started = time.time()
  learned, pixel = ShapesJudge(os.path.join(folder, "judge")), PixelJudge()
  pipe = Text2Image("pixart", folder, num_steps=STEPS, guidance_scale=GUIDANCE,
                    max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH)
  captioned = [world.caption(s) for s in world.scenes(seed, num, "heldout")]
  sets = {"captioned": (captioned, asks_from_prompts(captioned))}
  sets.update({f"neutral_{c}": neutral_captions(c, per_category, neutral_seed) for c in CATEGORIES})
  results, pooled = {}, {c: ([], []) for c in CATEGORIES}
  for name, (prompts, asks) in sets.items():
    images = pipe.generate(prompts, render.SIZE, render.SIZE, batch, desc=name)
    first, second = learned.predictions(images), pixel.predictions(images)
    results[name] = {"images": len(prompts), "categories": compare(first, second, prompts),
                     "presence": presence(images, asks, learned, pixel)}
    for c in CATEGORIES:
      pooled[c][0].extend(first[c].labels)
      pooled[c][1].extend(second[c].labels)
  agree = {c: agreement(a, b, world.CONCEPTS[c]) for c, (a, b) in pooled.items()}
  sha = lambda *path: files.sha256(os.path.join(folder, *path))
  return {
      "agreement": agree,
      "renders": renders_check(renders, 1, learned, pixel),
      "sets": results,
      "protocol": {"steps": STEPS, "guidance_scale": GUIDANCE, "noise": "image i of a set: seed i",
                   "captioned": f"world.scenes({seed}, {num}, 'heldout')",
                   "neutral": f"per category, the first {per_category} of world.scenes("
                              f"{neutral_seed}, ..., 'heldout') naming it, neutral_caption",
                   "read": "each judge's top class per category; confusion rows: learned judge"},
      "pixel_judge": pixel.describe(), "learned_judge": learned.describe(),
      "transformer_sha256": sha("transformer", "diffusion_pytorch_model.safetensors"),
      "seconds": round(time.time() - started, 1)}


def table(result: dict) -> str:
  lines = ["| category | n | agreement [95% CI] | kappa | learned acc. | pixel acc. | pixel on renders |",
           "|---|---|---|---|---|---|---|"]
  for c, row in result["agreement"].items():
    cap = result["sets"]["captioned"]["categories"][c]
    ren = result["renders"]["categories"][c]["pixel"]
    kappa = "n/a" if row["kappa"] is None else f"{row['kappa']:.3f}"
    lines.append(f"| {c} | {row['n']} | {row['rate']:.3f} [{row['interval'][0]:.3f}, "
                 f"{row['interval'][1]:.3f}] | {kappa} | {cap['learned_accuracy']['accuracy']:.3f} | "
                 f"{cap['pixel_accuracy']['accuracy']:.3f} | {ren['accuracy']:.4f} ({ren['n']}) |")
  lines += ["", "| set | category | asked | read by both | learned only | pixel only | agreement [95% CI] "
            "| kappa |", "|---|---|---|---|---|---|---|---|"]
  for name, part in result["sets"].items():
    for c, p in part["presence"].items():
      row = p["agreement"]
      kappa = "n/a" if row["kappa"] is None else f"{row['kappa']:.3f}"
      lines.append(f"| {name} | {c} | {p['images']} | {p['confirmed']} | "
                   f"{p['first_present'] - p['confirmed']} | {p['second_present'] - p['confirmed']} | "
                   f"{row['rate']:.3f} [{row['interval'][0]:.3f}, {row['interval'][1]:.3f}] | {kappa} |")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--folder", default=str(ASSETS))
  parser.add_argument("--num", type=int, default=256, help="captioned images")
  parser.add_argument("--per-category", type=int, default=64, help="neutral images per category")
  parser.add_argument("--renders", type=int, default=1024, help="rendered scenes for the check")
  parser.add_argument("--out", default=RESULT)
  args = parser.parse_args(argv)
  result = study(args.folder, args.num, args.per_category, args.renders)
  result["command"] = " ".join(["python -m studies.second_judge",
                                *(sys.argv[1:] if argv is None else argv)])
  files.write_json(args.out, result)
  print(table(result))


if __name__ == "__main__":
  main()
