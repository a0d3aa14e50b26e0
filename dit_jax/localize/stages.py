"""The two computing stages of a localization run, each on its config subtree: score (every
localizer's block scores of each concept on its train prompts, config.score) and sweep (block
interventions on the eval prompts, judged, config.sweep). Each concept's results are written once,
as soon as they exist (scores/<localizer>/<concept>.json, interventions/<concept>.json), and a
rerun takes them from disk. Neither draws a figure: the report does (dit_jax/localize/conclude.py).
"""
from __future__ import annotations

import functools
import json
import os
import re

import numpy as np
from tqdm import tqdm

from dit_jax import blocks, provenance
from dit_jax.files import read_json, write_json
from dit_jax.localize import localizers, setcache, sweep as sweep_lib, withhold
from dit_jax.localize.inputs import score_dir
from dit_jax.localize.records import InterventionRow


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# ------------------------------------------------------------------------------------ score

def score_concepts(pipe, sample, score, knowledge_set, concepts, out: str, name: str, judge,
                   chunk: int) -> dict:
  """concept -> ScoreRecord dict of localizer `name` on the train prompts, computed where its
  record is not on disk yet (inputs.score_dir)."""
  scores = {}
  localizer = localizers.get(name)
  for concept in tqdm(concepts, desc=f"scoring concepts ({name})"):
    path = os.path.join(score_dir(out, name), f"{slug(concept)}.json")
    if not os.path.exists(path):
      record = localizer.score(
          pipe, knowledge_set.pairs(concept, "train"), sample.seeds, (sample.height, sample.width),
          score.batch_size, judge=judge, chunk=chunk)
      write_json(path, record.to_dict(), indent=1)
    scores[concept] = read_json(path)
  return scores


# ------------------------------------------------------------------------------------ sweep

def grid(sweep, num_blocks: int) -> list[int]:
  """The swept K, as counts, ascending (a fraction and a count naming one K sweep it once). With
  the exact verdict (sweep.exact_limit > 0) K = 1, every block alone, is always swept."""
  ks = {blocks.resolve_k(k, num_blocks) for k in sweep.ks} - {0}
  if sweep.exact_limit:
    ks.add(1)
  return sorted(ks)


def plan_concept(sample, sweep, ranking, num_blocks: int, concept: str) -> list:
  """Every intervention of one concept's sweep (sweep.plan_interventions and its windows)."""
  ks = grid(sweep, num_blocks)
  plan = sweep_lib.plan_interventions(
      ranking, ks, sweep.random_draws, sweep.seed, sweep.single_blocks, reverse=True,
      concept=concept, random_overlap=sweep.random_overlap, reverse_draws=sweep.reverse_draws,
      depth_draws=sweep.depth_draws, exact_limit=sweep.exact_limit)
  windows = sweep_lib.time_windows(sweep.time_windows, sample.num_steps)
  return plan + sweep_lib.plan_windows(ranking, ks, windows, sweep.single_blocks)


class ConceptSweep:
  """One concept's sweep: its interventions, sampled and judged set by set through the set cache,
  as rows; the images of the sets its grid shows are kept for the report."""

  def __init__(self, pipe, model: dict, sample, sweep, judge, pairs, knowledge_set, cache_folder,
               chunk: int):
    self.pipe, self.model, self.sample, self.sweep, self.judge = pipe, model, sample, sweep, judge
    self.pairs, self.cache_folder, self.chunk = pairs, cache_folder, chunk
    self.withheld = withhold.replacement(pipe, pairs, sweep.withhold, knowledge_set,
                                         (sample.height, sample.width))
    self.expanded = [p for p in pairs for _ in sample.seeds]              # rows are prompt-major

  def runs(self, plan):
    """(tag, interventions, options) of each family of runs. FLUX/SD3 with sweep.pooled_swap (the
    paper's intervention): an intervention that selects a block also gives the run the other
    prompt's pooled CLIP vector; these are the rows the verdict reads. sweep.residual_swap:
    FLUX's control, the whole text stream replaced onward ("top+residual"); variants swap
    something more when a block is selected, so without one they are the plain runs."""
    runs = [("", plan, {"swap_pooled": True} if self.sweep.pooled_swap else {})]
    if self.sweep.residual_swap:
      runs.append(("+residual", [i for i in plan if i.blocks], {"flux_swap": "residual"}))
    return runs

  def rows(self, plan) -> tuple[list[dict], dict]:
    """The concept's rows, and name -> images of the sets its grid shows."""
    rows, shown = [], {}
    concept, category = self.pairs[0].concept, self.pairs[0].category
    for tag, part, options in self.runs(plan):
      cache = setcache.SetCache(self.cache_folder, self.cache_inputs(options))
      judged = self.judge_sets(part, cache, options)
      for intervention in part:
        found = judged[set_key(intervention)]
        window = intervention.window.name if intervention.window else "all"
        # A windowed row's kind names its window too, so the all-steps analysis never mixes it in.
        kind = intervention.kind + ("" if window == "all" else f"@{window}") + tag
        rows.append(InterventionRow(
            concept, category, kind, intervention.k, intervention.draw, list(intervention.blocks),
            float(np.mean(found["scores"])), found["other"], self.sweep.random_overlap,
            found["scores"], window=window, seeds=len(self.sample.seeds),
            chance=self.judge.chance(category), context=found["context"]).to_dict()
            | ({"null": intervention.null} if intervention.null else {}))
        if not tag and is_shown(intervention):
          images = shown[intervention.name] = cache.images_of(set_key(intervention))
          second = None if images is None else self.judge.second_opinion(images, self.expanded)
          if second is not None:        # a second judge's word on the images a grid shows
            rows[-1]["second_opinion"] = {**second, "intervention": intervention.name}
    return rows, {name: images for name, images in shown.items() if images is not None}

  def cache_inputs(self, options: dict) -> dict:
    """Everything but the set that decides a set's judged result (dit_jax/localize/setcache.py).
    The keys are the flat config's, so the sets judged before the config had stages (replicate
    1's, results/set_cache) keep their files."""
    sample, withheld = self.sample, self.withheld
    return {"weights": weights_by_content(self.model["checkpoint"]),
            "model": self.model["model"], "dtype": self.model["dtype"],
            "num_steps": sample.num_steps, "guidance_scale": sample.guidance_scale,
            "size": [sample.height, sample.width],
            "max_sequence_length": self.model["max_sequence_length"], "seeds": list(sample.seeds),
            "prompts": [p.prompt for p in self.pairs], "withhold": self.sweep.withhold,
            "withheld": withheld if isinstance(withheld, (list, tuple)) else setcache.digest(withheld),
            "judge": self.judge.describe(), "options": sorted(options.items())}

  def judge_sets(self, plan, cache, options) -> dict:
    """set key -> the judge's per-image presence, context and other-category accuracy, for every
    distinct intervention of `plan`: from the cache where it has them, else sampled in batches of
    SETS_PER_BATCH and cached as each batch is judged. The images of the sets a grid shows are
    kept."""
    distinct = list({set_key(i): i for i in plan}.values())
    shown = {set_key(i) for i in plan if is_shown(i)}
    missing = [i for i in distinct if cache.get(set_key(i)) is None
               or (set_key(i) in shown and not cache.has_images(set_key(i)))]
    for start in tqdm(range(0, len(missing), SETS_PER_BATCH), desc=f"sets of {self.pairs[0].concept}",
                      leave=False, disable=not missing):
      part = missing[start:start + SETS_PER_BATCH]
      images = sweep_lib.run_interventions(
          self.pipe, [p.prompt for p in self.pairs], self.withheld, list(self.sample.seeds),
          (self.sample.height, self.sample.width), part, self.chunk, **options)
      for intervention, imgs in zip(part, images):
        context = self.judge.context(imgs, self.expanded)
        key = set_key(intervention)
        if key in shown:
          cache.put_images(key, imgs)
        cache.put(key, {"scores": [float(x) for x in self.judge.presence(imgs, self.expanded)],
                        "context": [] if context is None else [float(x) for x in context],
                        "other": other_categories(self.judge, imgs, self.expanded)})
    return {set_key(i): cache.get(set_key(i)) for i in distinct}


# Interventions sampled, judged and cached together: a Ctrl-C loses at most this many sets' work.
SETS_PER_BATCH = 16


def set_key(intervention) -> str:
  """What distinguishes one intervention's images from another's with the same inputs."""
  window = intervention.window
  return json.dumps([list(intervention.blocks), intervention.reverse,
                     None if window is None else [window.start, window.end]])


def is_shown(intervention) -> bool:
  """Whether the concept's image grid has a row for it (a single block, a drawn set after the first,
  or a set of the exact sweep has none)."""
  return intervention.kind != "single" and intervention.draw < 1 and not intervention.null


def other_categories(judge, images, pairs) -> dict[str, float]:
  """The judge's accuracy on the categories the intervention did not target (if it can tell)."""
  if not hasattr(judge, "category_accuracy"):
    return {}
  return {c: v for c, v in judge.category_accuracy(images, pairs).items() if c != pairs[0].category}


def weights_by_content(folder: str) -> str:
  """The weights' fingerprint by content where the folder is small (the same in every clone, as
  the shipped Shapes model's stored results need), else provenance's (the transformer by content,
  the other parts by size and time: hashing a 9 GB text encoder per run would cost minutes).
  Hashed once per state of the folder: every concept asks, and a folder rewritten in the same
  process (a notebook that trains, then localizes) is hashed again."""
  paths = [os.path.join(root, f) for root, _, names in os.walk(folder) for f in names]
  state = tuple(sorted((path, info.st_size, info.st_mtime_ns)
                       for path, info in zip(paths, map(os.stat, paths))))
  return _fingerprint(folder, state)


@functools.lru_cache(maxsize=4)
def _fingerprint(folder: str, state: tuple) -> str:
  return provenance.weights_fingerprint(folder, content=sum(size for _, size, _ in state) < 2**31)
