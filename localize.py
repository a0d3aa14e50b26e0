"""Localization and causal validation of knowledge in DiT blocks.

    python localize.py --config configs/shapes.py                 # the shipped Shapes model, CPU
    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-512x512

For every concept of the knowledge set: (1) attention-contribution scores of its tokens in every
block, averaged over the train prompts, timesteps and seeds, ranked; (2) one vmapped sweep of block
interventions on the eval prompts (top-K, bottom-K, random-K draws, reverse, optionally every single
block) judged for the concept's presence and for the other categories; (3) reports: scores.json/csv,
heatmap.png, per-category K curves, image grids, interventions.csv and a summary table. Each concept's
results are written as soon as they exist, and a rerun skips what is already on disk.
"""
from __future__ import annotations

import json
import os
import re
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from dit_jax import entry, judges, knowledge, localization, report, validation
from dit_jax.pipeline import Text2Image

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<model>.py", lock_config=True)


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def load_knowledge(config) -> knowledge.KnowledgeSet:
  source = config.knowledge
  if source == "shapes":
    full = knowledge.shapes()
  elif source == "builtin":
    full = knowledge.builtin()
  elif source.startswith("lock:"):
    full = knowledge.load_lock(source[len("lock:"):])
  else:
    raise SystemExit(f"config.knowledge={source!r}: use 'shapes', 'builtin' or 'lock:/path/to/LocK'")
  return full.subset(categories=list(config.categories) or None, concepts=list(config.concepts) or None,
                     per_category=config.concepts_per_category or None,
                     prompts_per_concept=config.prompts_per_concept or None)


def read_json(path):
  with open(path) as f:
    return json.load(f)


def write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1)
  os.replace(path + ".tmp", path)


def score_concept(pipe, config, pairs) -> dict:
  scores = localization.concept_scores(pipe, [p.prompt for p in pairs], [p.concept for p in pairs],
                                       list(config.seeds), (config.height, config.width),
                                       config.batch_size)
  mean = scores.mean(axis=(0, 1))                                      # (blocks, 2)
  return {"category": pairs[0].category, "score_wo": mean[:, 0].tolist(),
          "score_v": mean[:, 1].tolist(), "per_step_wo": scores.mean(axis=0)[:, :, 0].tolist(),
          "num_prompts": len(pairs), "num_seeds": len(config.seeds), "num_steps": scores.shape[1]}


def other_categories(judge, images, pairs) -> dict[str, float]:
  """The judge's accuracy on the categories the intervention did not target (if it can tell)."""
  if not hasattr(judge, "category_accuracy"):
    return {}
  return {c: v for c, v in judge.category_accuracy(images, pairs).items() if c != pairs[0].category}


def make_judge(config, knowledge_set):
  kwargs = dict(config.judge_args)
  if config.judge == "clip":
    if not kwargs.get("folder"):
      raise SystemExit("the CLIP judge needs a local CLIP folder: --config.judge_args.folder=/path "
                       "(e.g. a copy of openai/clip-vit-base-patch32)")
    kwargs.setdefault("candidates", knowledge_set.concepts)   # concepts compete within a category
  return judges.make_judge(config.judge, **kwargs)


def intervene_concept(pipe, config, judge, pairs, ranking, num_blocks, out_dir) -> list[dict]:
  ks = [localization.resolve_k(k, num_blocks) for k in config.ks]
  plan = localization.plan_interventions(ranking, ks, config.random_draws, config.seed,
                                         config.single_blocks, reverse=True)
  sweep = lambda part, swap_pooled: localization.run_interventions(
      pipe, [p.prompt for p in pairs], [p.neutral for p in pairs], list(config.seeds),
      (config.height, config.width), part, config.intervention_chunk, swap_pooled)
  images = sweep(plan, False)
  runs = [("", plan, images)]
  if config.pooled_swap:
    # FLUX with the pooled CLIP vector swapped too: rows of their own ("top+pooled", ...).
    swapped = [i for i in plan if i.kind != "none"]
    runs.append(("+pooled", swapped, sweep(swapped, True)))
  expanded = [p for p in pairs for _ in config.seeds]                   # rows are prompt-major
  rows = []
  for tag, part, part_images in runs:
    for intervention, imgs in zip(part, part_images):
      rows.append({"concept": pairs[0].concept, "category": pairs[0].category,
                   "kind": intervention.kind + tag, "k": intervention.k, "draw": intervention.draw,
                   "blocks": list(intervention.blocks),
                   "presence": float(np.mean(judge.presence(imgs, expanded))),
                   "other": other_categories(judge, imgs, expanded)})
  shown = {i.name: imgs for i, imgs in zip(plan, images) if i.kind != "single" and i.draw < 2}
  report.image_grid(shown, os.path.join(out_dir, "grids", f"{slug(pairs[0].concept)}.png"),
                    column_labels=[p.prompt for p in expanded])
  return rows


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  validation.validate_localize_config(config)
  out = config.out_dir
  os.makedirs(out, exist_ok=True)
  started = time.time()
  entry.require_checkpoint(config)
  pipe = Text2Image(config.model, config.checkpoint, num_steps=config.num_steps,
                    guidance_scale=config.guidance_scale, dtype=entry.DTYPES[config.dtype],
                    cache_dir=os.path.join(out, "prompt_cache"),
                    max_sequence_length=config.max_sequence_length or None)
  knowledge_set = load_knowledge(config)
  judge = make_judge(config, knowledge_set)
  num_blocks = localization.num_blocks(pipe.module.config)
  write_json(os.path.join(out, "run.json"), {"config": config.to_dict(), "judge": judge.describe(),
                                             "num_blocks": num_blocks})
  concepts = [c for cat in knowledge_set.categories for c in knowledge_set.concepts[cat]]
  variant = localization.VARIANTS[config.score_variant]

  scores = {}
  for concept in tqdm(concepts, desc="scoring concepts"):
    path = os.path.join(out, "scores", f"{slug(concept)}.json")
    if not os.path.exists(path):
      write_json(path, score_concept(pipe, config, knowledge_set.pairs(concept, "train")))
    scores[concept] = read_json(path)
  cfg = pipe.module.config
  labels = None
  if config.model == "flux":   # double-stream blocks first, then single-stream, ranked together
    labels = [f"D{i}" for i in range(cfg.num_layers)] + [f"S{i}" for i in range(cfg.num_single_layers)]
  report.write_scores(scores, out, block_labels=labels)
  top_k = localization.resolve_k(config.ks[0], num_blocks)
  report.heatmap(scores, os.path.join(out, "heatmap.png"), variant="score_wo" if variant == 0
                 else "score_v", block_labels=labels, k=top_k)

  rows = []
  for concept in tqdm(concepts, desc="interventions"):
    path = os.path.join(out, "interventions", f"{slug(concept)}.json")
    if not os.path.exists(path):
      key = "score_wo" if variant == 0 else "score_v"
      ranking = localization.rank_blocks(np.asarray(scores[concept][key]))
      write_json(path, intervene_concept(pipe, config, judge, knowledge_set.pairs(concept, "eval"),
                                         ranking, num_blocks, out))
    rows += read_json(path)
  report.write_rows(rows, out)
  for category in knowledge_set.categories:
    report.k_curve(rows, category, os.path.join(out, "curves", f"{slug(category)}.png"))
  report.write_summary(rows, out)
  auto = {c: report.auto_k(rows, c, config.presence_target) for c in knowledge_set.categories}
  write_json(os.path.join(out, "auto_k.json"), auto)
  print(report.summary_table(rows))
  print(f"automatic K (presence below {config.presence_target}): {auto}")
  print(f"results in {out} ({time.time() - started:.0f}s)")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
