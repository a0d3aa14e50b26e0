"""Localization and causal validation of knowledge in DiT blocks: run(config, workdir).

    python localize.py --config configs/shapes.py                 # the shipped Shapes model, CPU
    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-512x512

For every concept of the knowledge set: (1) attention-contribution scores of its tokens in every
block, averaged over the train prompts, timesteps and seeds, ranked; (2) one vmapped sweep of block
interventions on the eval prompts (top-K, bottom-K, random-K and depth-matched random-K draws,
reverse, optionally every single block) judged for the concept's presence and for the other
categories; (3) reports: scores.json/csv, heatmap.png, per-category K curves, image grids,
interventions.csv and a summary with intervals and p-values (docs/design.md, "Statistics"); block x
timestep maps (maps/), and with config.time_windows the same interventions limited to windows of
sampling steps; report.html, one page with all of it. config.withhold says what the selected blocks
read instead of the concept (dit_jax/localize/withhold.py). Each concept's results are written as soon as
they exist, and a rerun skips what is already on disk.

Several localizers (config.localizers) can score the same concepts; config.localizer, one of them,
ranks the blocks for the sweep and fills scores.json. Each localizer's records go to
scores/<localizer>/<concept>.json (the attention's to scores/<concept>.json, where runs always kept
them), and agreement.json / agreement.png compare them per category (dit_jax/localize/agreement.py).

Devices and hosts (README, "What runs where"): one process splits every sweep's interventions and
every scoring batch over its devices (config.num_devices, 0: all; dit_jax/sharding.py's mesh).
Several processes (hosts of a TPU pod slice with config.distributed, or processes given
config.process_index / process_count) split the concepts, concepts[index::count], each writing only
its concepts' files; a run with config.merge_only then writes the reports from them, the same as
one process would.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import sys
import textwrap
import time
import warnings

import jax
import numpy as np
from tqdm import tqdm

from dit_jax.localize import agreement, judges, localizers, setcache, sweep, withhold
from dit_jax.verdict import exact, sets, summary
from dit_jax import blocks, cli, files, knowledge, provenance, sharding
from dit_jax.report import page as page_lib, figures, tables
from dit_jax.pipeline import checks
from dit_jax.files import read_json, write_json
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.localize.records import InterventionRow


PLACEBO_RUNS = 2000   # simulated placebo and planted runs behind the summary's error rate and power


def exact_answer(rows, out: str, power_effect: float) -> list[str]:
  """The exact hierarchy's verdict (dit_jax/verdict/exact.py) into verdict.json, with the false-positive
  rate of the same config under a placebo and its power for a planted effect of `power_effect`
  (top-K removing that much more than the mean set), both re-ranked on the swept sets; the answer
  in words ([] for a run without an exact or sampled null)."""
  found = exact.decide(rows)
  if found is None:
    return []
  lines = ["Answer (exact ranks among every K-block set; docs/design.md, \"Exact verdict\"):",
           *exact.answer(found)]
  placebo = exact.simulate(rows, PLACEBO_RUNS)
  if placebo["runs"]:
    rate = placebo["removable"]["runs_with_any"] / placebo["runs"]
    lines.append(f"This config under a placebo (top-K a random set, {placebo['runs']} re-ranked runs): "
                 f"{rate:.3f} of runs say any 'removable'.")
    found["placebo"] = placebo
  if placebo["runs"] and power_effect > 0:
    planted = exact.simulate(rows, PLACEBO_RUNS, effect=power_effect, seed=1)
    cells = planted["removable"]["positive_cells"] / (planted["runs"] * planted["cells_per_run"])
    runs = planted["removable"]["runs_with_any"] / planted["runs"]
    lines.append(f"Power for a planted effect of {power_effect:+.2f} (top-K minus the mean set) in "
                 f"every present concept: {runs:.2f} of runs find one, {cells:.2f} of cells are found.")
    found["power"] = planted
  write_json(os.path.join(out, "verdict.json"), found)
  return fixed_width(lines)


def fixed_width(lines: list[str], width: int = 100) -> list[str]:
  """The answer as wide as the tables under it (summary.txt, the console): each K of a concept
  on lines of its own."""
  out = []
  for line in lines:
    first, *rest = line.split("; K=")
    for part in [first] + ["  K=" + r for r in rest]:
      out += textwrap.wrap(part, width, subsequent_indent="    ")
  return out


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def full_knowledge(config) -> knowledge.KnowledgeSet:
  """The config's whole knowledge set, with config.prompts_per_concept prompts where the set makes
  them on demand."""
  return knowledge.load_knowledge(config.knowledge, config.prompts_per_concept or None,
                                  config.get("prompt_seed", 0))


def load_knowledge(config, full: knowledge.KnowledgeSet | None = None) -> knowledge.KnowledgeSet:
  """The part of the knowledge set a run localizes; asking for more prompts than a concept has is an
  error (KnowledgeSet.subset)."""
  full = full or full_knowledge(config)
  return full.subset(categories=list(config.categories) or None, concepts=list(config.concepts) or None,
                     per_category=config.concepts_per_category or None,
                     prompts_per_concept=config.prompts_per_concept or None)


def make_judge(config, full: knowledge.KnowledgeSet) -> judges.Judge:
  """The config's judge, built on the whole knowledge set: CLIP compares a concept with every
  concept of its category (and the neutral phrase), not only with those this run localizes."""
  return judges.make_judge(config.judge, full, **config.judge_args)


def needs_judge(config) -> bool:
  """A judge is built only where one is used: the sweep judges every image, and a localizer with
  needs_judge judges images to score; a scoring-only run of the others needs none (so no CLIP
  weights either)."""
  return not config.score_only or any(localizers.get(n).needs_judge for n in config.localizers)


def other_categories(judge, images, pairs) -> dict[str, float]:
  """The judge's accuracy on the categories the intervention did not target (if it can tell)."""
  if not hasattr(judge, "category_accuracy"):
    return {}
  return {c: v for c, v in judge.category_accuracy(images, pairs).items() if c != pairs[0].category}


def grid(config, num_blocks: int) -> list[int]:
  """The swept K, as counts, ascending (a fraction and a count naming one K sweep it once). With
  the exact verdict (config.exact_limit > 0) K = 1, every block alone, is always swept."""
  ks = {blocks.resolve_k(k, num_blocks) for k in config.ks} - {0}
  if config.get("exact_limit"):
    ks.add(1)
  return sorted(ks)


def intervene_concept(pipe, config, judge, pairs, ranking, num_blocks, out_dir,
                      knowledge_set=None, memo: dict | None = None) -> list[dict]:
  plan = sweep.plan_interventions(
      ranking, grid(config, num_blocks), config.random_draws, config.seed, config.single_blocks,
      reverse=True, concept=pairs[0].concept, random_overlap=config.random_overlap,
      reverse_draws=config.reverse_draws, depth_draws=config.depth_draws,
      exact_limit=config.get("exact_limit"))
  windows = sweep.time_windows(config.time_windows, config.num_steps)
  plan += sweep.plan_windows(ranking, grid(config, num_blocks), windows, config.single_blocks)
  size = (config.height, config.width)
  withheld = withhold.replacement(pipe, pairs, config.withhold, knowledge_set, size)
  expanded = [p for p in pairs for _ in config.seeds]                   # rows are prompt-major
  # FLUX/SD3 with config.pooled_swap (the paper's intervention): an intervention that selects a
  # block also gives the run the other prompt's pooled CLIP vector. These are the rows the verdict
  # reads; the text-only swap is the same config with pooled_swap=False (another out_dir).
  runs = [("", plan, {"swap_pooled": True} if config.pooled_swap else {})]
  if config.residual_swap:
    # FLUX's control, not the paper's swap: the whole text stream replaced onward ("top+residual").
    # Variants swap something more when a block is selected; without one they are the plain runs.
    runs.append(("+residual", [i for i in plan if i.blocks], {"flux_swap": "residual"}))
  rows, shown = [], {}
  for tag, part, options in runs:
    cache = setcache.SetCache(set_cache_folder(config, out_dir),
                              cache_inputs(config, judge, pairs, withheld, options))
    judged = judge_sets(pipe, config, judge, pairs, expanded, withheld, part, cache, memo, options)
    for intervention in part:
      found = judged[set_key(intervention)]
      window = intervention.window.name if intervention.window else "all"
      # A windowed row's kind names its window too, so the all-steps analysis never mixes it in.
      kind = intervention.kind + ("" if window == "all" else f"@{window}") + tag
      rows.append(InterventionRow(
          pairs[0].concept, pairs[0].category, kind, intervention.k,
          intervention.draw, list(intervention.blocks), float(np.mean(found["scores"])),
          found["other"], config.random_overlap, found["scores"], window=window,
          seeds=len(config.seeds), chance=judge.chance(pairs[0].category),
          context=found["context"]).to_dict()
          | ({"null": intervention.null} if intervention.null else {}))
      if not tag and is_shown(intervention):
        shown[intervention.name] = cache.images_of(set_key(intervention))
  shown = {name: images for name, images in shown.items() if images is not None}
  figures.image_grid(shown, os.path.join(out_dir, "grids", f"{slug(pairs[0].concept)}.png"),
                    column_labels=[p.prompt for p in expanded])
  return rows


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


def set_cache_folder(config, out_dir: str) -> str:
  return config.get("set_cache") or os.path.join(out_dir, "set_cache")


def cache_inputs(config, judge, pairs, withheld, options: dict) -> dict:
  """Everything but the set that decides a set's judged result (dit_jax/localize/setcache.py)."""
  return {"weights": weights_by_content(config.checkpoint),
          "model": config.model, "dtype": config.dtype, "num_steps": config.num_steps,
          "guidance_scale": config.guidance_scale, "size": [config.height, config.width],
          "max_sequence_length": config.max_sequence_length, "seeds": list(config.seeds),
          "prompts": [p.prompt for p in pairs], "withhold": config.withhold,
          "withheld": withheld if isinstance(withheld, (list, tuple)) else setcache.digest(withheld),
          "judge": judge.describe(), "options": sorted(options.items())}


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


def judge_sets(pipe, config, judge, pairs, expanded, withheld, plan, cache, memo, options) -> dict:
  """set key -> the judge's per-image presence, context and other-category accuracy, for every
  distinct intervention of `plan`: from the cache where it has them, else sampled in batches of
  SETS_PER_BATCH and cached as each batch is judged. The images of the sets a grid shows are kept."""
  distinct = list({set_key(i): i for i in plan}.values())
  shown = {set_key(i) for i in plan if is_shown(i)}
  missing = [i for i in distinct if cache.get(set_key(i)) is None
             or (set_key(i) in shown and not cache.has_images(set_key(i)))]
  for start in tqdm(range(0, len(missing), SETS_PER_BATCH), desc=f"sets of {pairs[0].concept}",
                    leave=False, disable=not missing):
    part = missing[start:start + SETS_PER_BATCH]
    images = sweep.run_interventions(
        pipe, [p.prompt for p in pairs], withheld, list(config.seeds),
        (config.height, config.width), part, config.intervention_chunk, memo=memo, **options)
    for intervention, imgs in zip(part, images):
      context = judge.context(imgs, expanded)
      key = set_key(intervention)
      if key in shown:
        cache.put_images(key, imgs)
      cache.put(key, {"scores": [float(x) for x in judge.presence(imgs, expanded)],
                      "context": [] if context is None else [float(x) for x in context],
                      "other": other_categories(judge, imgs, expanded)})
  return {set_key(i): cache.get(set_key(i)) for i in distinct}


def calibrate(judge, rows: list[dict]) -> None:
  """Calibrate the judge's thresholds on the neutral-prompt images of every concept (a judge with a
  fixed threshold keeps it), then give every row its hit rate at its category's threshold."""
  neutral: dict[str, list[float]] = {}
  for r in rows:
    if r["kind"] == "neutral":
      neutral.setdefault(r["category"], []).extend(r["scores"])
  judge.calibrate(neutral)
  for r in rows:
    scores = np.asarray(r.get("scores") or [], float)
    hits = (scores >= judge.threshold_for(r["category"])).astype(float)
    r["unit_hits"] = hits.tolist()       # what the verdict counts (dit_jax/verdict/sets.py)
    r["hits"] = float(hits.mean()) if scores.size else None


# Config keys that decide no result (where results go, generation-only settings, chunking; which
# localizers score: each has a stage of its own, see score_stages; a Hub id's revision: its commit
# is in the checkpoint path the id resolves to; which devices and processes share the work).
NOT_INPUTS = ("out_dir", "set_cache", "fresh", "plugins", "intervention_chunk", "prompt", "prompts_file",
              "transformer", "cache_dir", "generate_dir", "localizers", "revision",
              "num_devices", "fsdp", "distributed", "process_index", "process_count", "merge_only",
              "score_only",   # a scoring-only run's scores are a full run's: it resumes from them
              "power_effect")   # the summary's power is recomputed from the rows at every report
# Keys only the intervention stage reads: changing them keeps the scores.
INTERVENTION_ONLY = ("ks", "random_draws", "exact_limit", "placebo", "random_overlap", "reverse_draws", "depth_draws", "single_blocks",
                     "pooled_swap", "residual_swap", "judge", "judge_args", "presence_target", "seed",
                     "score_variant", "withhold", "time_windows")
OUTPUTS = {"scores": ("scores", "scores.json", "scores.csv", "heatmap.png"),
           "interventions": ("interventions", "interventions.jsonl", "interventions.csv", "grids",
                             "curves", "summary.txt", "summary.json", "auto_k.json", "maps", "report.html")}


def score_stage(name: str) -> str:
  """The provenance stage of a localizer's records: the attention's is "scores", as it always was."""
  return "scores" if name == "attention" else f"scores_{name}"


def score_dir(out: str, name: str) -> str:
  return os.path.join(out, "scores") if name == "attention" else os.path.join(out, "scores", name)


def check_localizers(config) -> None:
  """Every scoring localizer exists (an unknown one is named before any work), none twice, and the
  one that ranks is among them."""
  names = list(config.localizers)
  if not names:
    raise ValueError("config.localizers is empty: name at least the ranking one, config.localizer")
  for name in names:
    localizers.get(name)
  if len(set(names)) != len(names):
    raise ValueError(f"config.localizers names a localizer twice: {names}")
  if config.localizer not in names:
    raise ValueError(f"config.localizer={config.localizer!r} ranks the blocks, so it must score "
                     f"too: add it to config.localizers={tuple(names)}")


def check_inputs(config, workdir: str, judge) -> None:
  """Resume only results computed from this config and these weights (provenance.resume). Each
  localizer's scores are a stage of their own: adding a localizer keeps the others' scores, and
  those of a localizer that judges images depend on the judge too."""
  weights = provenance.weights_fingerprint(config.checkpoint)
  keys = [k for k in config.keys() if k not in NOT_INPUTS]
  # Which localizer ranks decides the sweep (below), not any localizer's scores.
  score_keys = [k for k in keys if k not in INTERVENTION_ONLY and k != "localizer"]
  stages, outputs = {}, dict(OUTPUTS)
  for name in config.localizers:
    judged = {"judge": judge.describe()} if localizers.get(name).needs_judge else {}
    stages[score_stage(name)] = provenance.stage_inputs(config, score_keys, weights=weights,
                                                        localizer=name, **judged)
    outputs.setdefault(score_stage(name), (os.path.relpath(score_dir(workdir, name), workdir),))
  if judge is not None:   # a scoring-only run without a judge leaves the sweep's record as it is
    stages["interventions"] = intervention_inputs(config, judge, weights)
  try:
    provenance.resume(workdir, stages, outputs, config.fresh)
  except provenance.StaleResults as error:
    raise SystemExit(str(error))


def intervention_inputs(config, judge, weights: str | None = None) -> dict:
  """What the intervention stage's results are computed from (the record a resume compares): every
  config value that decides a result, the weights' fingerprint and the judge."""
  keys = [k for k in config.keys() if k not in NOT_INPUTS]
  return provenance.stage_inputs(config, keys, judge=judge.describe(),
                                 weights=weights or provenance.weights_fingerprint(config.checkpoint))


def run(config, workdir: str, memo: dict | None = None) -> list[dict]:
  """Score, intervene, judge and report every concept of the config's knowledge set into
  `workdir`; returns the intervention rows. memo: images of interventions already sampled with
  this pipeline and withhold operator (sweep.run_interventions), kept across calls by
  whoever runs several configs that differ only in their draws (studies/placebo.py)."""
  out = os.fspath(workdir)
  started = time.time()
  validate_localize_config(config)
  cli.make_out_dir(out)
  if config.distributed:   # the hosts' indices are jax's, known only once they have joined
    return localize_into(config, out, memo, started)
  with cli.out_dir_lock(out, lock_name(config)):
    return localize_into(config, out, memo, started)


def lock_name(config) -> str:
  """One run at a time per out_dir, or per share of the concepts where processes split them."""
  if config.process_count:
    return f".localize-{config.process_index}-of-{config.process_count}.lock"
  return ".localize.lock"


def localize_into(config, out: str, memo: dict | None, started: float) -> list[dict]:
  """run() in the out_dir it holds."""
  withhold.check_operator(config.withhold)   # bad choices are named before any work
  windows = sweep.time_windows(config.time_windows, config.num_steps)
  join_processes(config)                     # before any computation, as jax.distributed asks
  index, count = process_share(config)
  if config.merge_only and config.fresh:
    raise ValueError("merge_only with fresh=True: the merge reads the processes' results, and fresh "
                     "would clear those of other inputs; rerun the processes with fresh instead")
  if config.score_only and (config.placebo or config.merge_only):
    raise ValueError("score_only with placebo or merge_only: a scoring-only run has no sweep to randomize "
                     "and no intervention results to merge; drop one of them")
  if config.merge_only and index:
    print(f"merge_only: process 0 merges; process {index} of {count} has nothing to do")
    return []
  split = count > 1 and not config.merge_only   # this process: its share of the concepts only
  cli.import_plugins(config)
  if config.merge_only:   # it computes nothing: every concept's files must be there, named first
    require_results(config, out, list(load_knowledge(config).all_concepts))
  checks.require_checkpoint(config)
  checks.require_pipeline(config)
  pipe = Text2Image(config.model, config.checkpoint, num_steps=config.num_steps,
                    guidance_scale=config.guidance_scale, dtype=checks.DTYPES[config.dtype],
                    cache_dir=os.path.join(out, "prompt_cache"),
                    max_sequence_length=config.max_sequence_length or None)
  use_local_devices(pipe, config)
  validate_ks(config.ks, pipe.module.config.num_blocks)
  full = full_knowledge(config)
  knowledge_set = load_knowledge(config, full)
  check_localizers(config)
  judge = make_judge(config, full) if needs_judge(config) else None
  check_inputs(config, out, judge)
  num_blocks = pipe.module.config.num_blocks
  record = lambda **extra: write_json(os.path.join(out, "run.json"), {
      "config": config.to_dict(), "judge": judge and judge.describe(), "num_blocks": num_blocks,
      "ks": grid(config, num_blocks), **extra})
  concepts = list(knowledge_set.all_concepts)
  # One of several processes writes only its concepts' files (nothing every process would write).
  share = concepts[index::count] if split else concepts
  earlier = earlier_seconds(out, config)   # read before record() starts this run's run.json
  if not split:
    record()
  say_resumed(config, out, share, earlier)
  try:
    return sweep_and_report(pipe, config, knowledge_set, judge, out, share, concepts, split, windows,
                            memo, record, lambda: earlier + time.time() - started)
  except KeyboardInterrupt:
    stop_on_interrupt(config, out, share, split, record, earlier + time.time() - started)


def sweep_and_report(pipe, config, knowledge_set, judge, out, share, concepts, split, windows,
                     memo, record, elapsed) -> list[dict]:
  """Score, sweep and report: the part of run() a Ctrl-C may interrupt (stop_on_interrupt);
  elapsed() is the compute time of this out_dir's results, over every run that made them."""
  index, count = process_share(config)
  num_blocks = pipe.module.config.num_blocks
  every = {name: score_concepts(pipe, config, knowledge_set, share, out, name, judge)
           for name in config.localizers}
  scores = every[config.localizer]
  labels = pipe.module.config.block_labels
  if not split:
    figures.write_scores(scores, out, block_labels=labels)
    ks = grid(config, num_blocks)
    write_agreement(every, scores, ks[len(ks) // 2], out)
    figures.heatmap(scores, os.path.join(out, "heatmap.png"), variant=config.score_variant,
                   block_labels=labels, k=ks[len(ks) // 2])

  if config.score_only:     # a ranking is all that is asked for (e.g. train.py's --config.blocks)
    if not split:
      record(seconds=round(elapsed(), 1), score_only=True)
    print(f"scores of {len(share)} concepts in {out}/scores.json (score_only: no interventions)")
    return []
  rows = []
  for concept in tqdm(share, desc="interventions"):
    path = os.path.join(out, "interventions", f"{slug(concept)}.json")
    if not os.path.exists(path):
      ranking = blocks.rank_blocks(np.asarray(scores[concept][config.score_variant]))
      if config.placebo:   # the verdict's false-positive check: a random "top-K" per concept
        ranking = sweep.placebo_ranking(num_blocks, config.seed, concept)
      write_json(path, intervene_concept(pipe, config, judge, knowledge_set.pairs(concept, "eval"),
                                         ranking, num_blocks, out, knowledge_set, memo))
    rows += read_json(path)
  if split:
    print(f"process {index} of {count}: results of {len(share)} of {len(concepts)} concepts in "
          f"{out}; when every process has finished, merge them: localize.py with the same config "
          "and --config.merge_only=True")
    return rows
  calibrate(judge, rows)
  answer = exact_answer(rows, out, config.get("power_effect", 0.0))
  auto = write_reports(rows, knowledge_set.categories, config.presence_target, out, answer)
  for concept, concept_scores in scores.items():   # block x timestep maps (docs/design.md, "Time")
    figures.time_map(concept, concept_scores, rows, windows, os.path.join(out, "maps", slug(concept)),
                    labels)
  if windows:   # is the concept localized in time? A table below the summary
    timing = tables.time_table(rows, windows)
    summary = os.path.join(out, "summary.txt")
    with open(summary) as f:
      files.write_text(summary, f.read() + "\n" + timing + "\n")
  seconds = elapsed()
  record(seconds=round(seconds, 1), load_average=[round(x, 2) for x in os.getloadavg()])
  print(tables.summary_table(rows))
  if windows:
    print(timing)
  print(auto_k_table(auto, config.presence_target))
  page = page_lib.write(out)     # after run.json has the time: the page shows it
  if answer:
    print("\n".join(answer))
  print(f"results in {out} ({seconds:.0f}s); open {page}")
  return rows


def earlier_seconds(out: str, config) -> float:
  """The compute time recorded in run.json by the runs whose results this one resumes (0 for a
  fresh start): run.json's seconds stay the time the results took, not the last rerun's."""
  path = os.path.join(out, "run.json")
  if config.fresh or not os.path.exists(path):
    return 0.0
  try:
    return float(read_json(path).get("seconds") or 0.0)
  except (ValueError, AttributeError, TypeError):
    return 0.0


def on_disk(config, out: str, concepts) -> tuple[int, int]:
  """How many of `concepts` have the ranking localizer's scores, and interventions, on disk."""
  have = lambda folder: sum(os.path.exists(os.path.join(folder, f"{slug(c)}.json")) for c in concepts)
  return have(score_dir(out, config.localizer)), have(os.path.join(out, "interventions"))


def saved_line(config, out: str, concepts) -> str:
  scored, swept = on_disk(config, out, concepts)
  line = f"scores of {scored} of {len(concepts)} concepts"
  return line if config.score_only else line + f", interventions of {swept} of {len(concepts)}"


def say_resumed(config, out: str, concepts, earlier: float) -> None:
  """A rerun says what it takes from disk (each concept's results are kept once written)."""
  scored, swept = on_disk(config, out, concepts)
  if scored or swept:
    done = scored == len(concepts) and (config.score_only or swept == len(concepts))
    print(f"resuming {out}: {saved_line(config, out, concepts)} are on disk (computed in "
          f"{earlier:.0f} s, which the times reported below include); "
          f"{'only the reports are rebuilt' if done else 'computing the rest'}", flush=True)


def stop_on_interrupt(config, out: str, concepts, split: bool, record, seconds: float):
  """Ctrl-C: say what is saved and the command that resumes it; run.json keeps the compute time
  so far, which the rerun adds to. Exits 130, as a shell does on SIGINT."""
  if not split:
    record(seconds=round(seconds, 1), interrupted=True)
  command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
  print(f"\ninterrupted after {seconds:.0f} s; saved in {out}: {saved_line(config, out, concepts)} "
        f"(each concept's results are written as soon as they exist; of the one under way, every "
        f"judged set is kept in {set_cache_folder(config, out)}).\n"
        f"To resume, rerun the same command with the same out_dir:\n  {command}", flush=True)
  raise SystemExit(130)


def join_processes(config) -> None:
  """config.distributed: jax.distributed.initialize() (the cluster's own discovery: every host of a
  TPU pod slice, SLURM, ...), so that jax.process_index / process_count say which share of the
  concepts is this host's (process_share). It must come before any computation."""
  if config.distributed and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def process_share(config) -> tuple[int, int]:
  """(index, count): this process's place among the processes that split the concepts, each
  taking concepts[index::count]. config.process_count > 0: independent processes started by hand
  or by a job array, each given its config.process_index; 0: jax's (several after
  jax.distributed.initialize, else one)."""
  ours = (jax.process_index(), jax.process_count())
  if not config.process_count:
    if config.process_index:
      raise ValueError(f"config.process_index={config.process_index} without config.process_count:"
                       " give both, e.g. --config.process_index=1 --config.process_count=2")
    return ours
  share = (config.process_index, config.process_count)
  if not 0 <= share[0] < share[1]:
    raise ValueError(f"config.process_index={share[0]}: processes are numbered 0..{share[1] - 1} "
                     f"(config.process_count={share[1]})")
  if ours[1] > 1 and share != ours:
    raise ValueError(f"config.process_index, process_count = {share}, but jax.distributed runs this "
                     f"as process {ours[0]} of {ours[1]}: leave config.process_count=0 to use jax's")
  return share


def use_local_devices(pipe, config) -> None:
  """Split the sweeps and the scoring over config.num_devices of this process's devices (0: all;
  sharding.local_mesh, config.fsdp as in training); one device runs as it always did."""
  mesh = sharding.local_mesh(config.num_devices, config.fsdp)
  if mesh.devices.size > 1:
    pipe.use_mesh(mesh)


def require_results(config, out: str, concepts) -> None:
  """merge_only computes nothing: every concept's scores (each localizer's) and interventions must
  be on disk, written by the processes of a split."""
  expected = [os.path.join(score_dir(out, name), f"{slug(c)}.json")
              for name in config.localizers for c in concepts]
  expected += [os.path.join(out, "interventions", f"{slug(c)}.json") for c in concepts]
  missing = [os.path.relpath(p, out) for p in expected if not os.path.exists(p)]
  if missing:
    raise SystemExit(f"merge_only: {len(missing)} result files are missing in {out}: "
                     f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Run every "
                     "process of the split (config.process_index / process_count) to the end first.")


def score_concepts(pipe, config, knowledge_set, concepts, out, name: str, judge) -> dict:
  """concept -> ScoreRecord dict of localizer `name` on the train prompts, computed where its
  record is not on disk yet (score_dir)."""
  scores = {}
  localizer = localizers.get(name)
  for concept in tqdm(concepts, desc=f"scoring concepts ({name})"):
    path = os.path.join(score_dir(out, name), f"{slug(concept)}.json")
    if not os.path.exists(path):
      record = localizer.score(
          pipe, knowledge_set.pairs(concept, "train"), config.seeds, (config.height, config.width),
          config.batch_size, judge=judge, chunk=config.intervention_chunk)
      write_json(path, record.to_dict(), indent=1)
    scores[concept] = read_json(path)
  return scores


def write_agreement(every: dict, scores: dict, k: int, out: str) -> dict:
  """agreement.json and agreement.png: per category, each pair of localizers' (and the attention's
  two variants') mean Kendall tau and top-K overlap over concepts, K the sweep's middle K."""
  named = {}
  for name, records in every.items():
    for concept, record in records.items():
      for label, values in localizers.named_scores(name, record).items():
        named.setdefault(label, {})[concept] = values
  table = agreement.compute(named, {c: r["category"] for c, r in scores.items()}, k)
  write_json(os.path.join(out, "agreement.json"),
             {"k": k, "localizers": list(named), "rule": agreement.RULE,
              "by_category": table})
  agreement.plot(table, list(named), os.path.join(out, "agreement.png"))
  return table


def write_reports(rows, categories, target: float, out: str, answer: list[str] = ()) -> dict:
  """Rows, K curves, the summary (the answer in words first: exact_answer) and the automatic K per
  category (summary.AUTO_K_RULE)."""
  figures.write_rows(rows, out)
  for category in categories:
    figures.k_curve(rows, category, os.path.join(out, "curves", f"{slug(category)}.png"))
  entries = tables.write_summary(rows, out, answer)
  auto = {c: gate_on_presence(summary.read_k(rows, c, target), *presence_floor(entries, rows, c))
          for c in categories}
  write_json(os.path.join(out, "auto_k.json"), {"rule": summary.AUTO_K_RULE, **auto})
  return auto


def presence_floor(entries, rows, category: str) -> tuple[bool, str]:
  """Was the category's concept there to remove? The verdict's presence floor where the summary
  has one (its original above the neutral prompt and chance), else the original's mean presence
  above the neutral prompt's. A K that "removes" a concept never drawn is no K."""
  floors = [(e.get("tests") or {}).get("floor") for e in entries if e.get("category") == category]
  floors = [f for f in floors if f]
  if floors:
    return any(f["holds"] for f in floors), "the verdict's presence floor (original above the neutral prompt and chance)"
  mean = lambda kind: np.mean([r["presence"] for r in rows if r["category"] == category
                               and r["kind"] == kind] or [np.nan])
  return bool(mean("none") > mean("neutral")), "the original's presence above the neutral prompt's"


def gate_on_presence(read: dict, present: bool, rule: str) -> dict:
  if present:
    return {**read, "present": True}
  return {**read, "k": None, "k_crossing": None, "present": False,
          "why": f"no K: the concept was never present ({rule} fails)"}


def auto_k_table(auto: dict, target: float) -> str:
  """Automatic K per category, as a table (swept K, crossing to 2 decimals; '-' for none)."""
  lines = [f"automatic K (top-K presence below {target}; swept K, and where the curve crosses):",
           f"  {'category':<12} {'K':>3} {'crossing':>8}"]
  for category, found in auto.items():
    crossing = "-" if found["k_crossing"] is None else f"{found['k_crossing']:.2f}"
    note = "" if found.get("present", True) else "  never present: no K"
    lines.append(f"  {category:<12} {'-' if found['k'] is None else found['k']:>3} {crossing:>8}{note}")
  return "\n".join(lines)


def validate_localize_config(config) -> None:
  """localize.py: scores are averaged over the seeds, and the sweep needs a K (the first also
  marks the heatmap)."""
  cli.require_nonempty(config, "seeds", "ks")
  cli.check_k_values(config.ks)
  cli.require_positive(config, "num_steps", "intervention_chunk", "batch_size")
  if config.get("pooled_swap") and config.get("time_windows"):
    raise ValueError("config.pooled_swap with config.time_windows: the pooled CLIP vector reaches "
                     "every sampling step through the modulation, so a windowed intervention "
                     "cannot swap it; run the windows with --config.pooled_swap=False")
  if "exact_limit" in config and not config.get("random_overlap", True):
    raise ValueError("config.random_overlap=False with the exact verdict (config.exact_limit): its null "
                     "is every K-block set, top-K's blocks included; leave random_overlap=True")
  if config.get("random_draws", 1) < 1:
    raise ValueError(f"config.random_draws={config.random_draws}: the verdict ranks top-K among "
                     "random K-sets, so it needs at least one (200 by default)")
  for key, flag in (("random_draws", "removable"), ("reverse_draws", "sufficient")):
    draws = config.get(key, 0)
    # p = (1 + #sets at least as extreme) / (R + 1) >= 1 / (R + 1), and BH only raises it.
    if draws > 0 and 1 / (draws + 1) >= sets.ALPHA:
      warnings.warn(f"config.{key}={draws}: with {draws} random K-sets the set-level p cannot go "
                    f"below 1/{draws + 1} = {1 / (draws + 1):.3f}, so no cell can be '{flag}' at "
                    f"{sets.ALPHA} (docs/design.md, \"Verdict\")", stacklevel=2)


def validate_ks(ks, num_blocks: int) -> list[int]:
  """The K grid as block counts in 0..num_blocks (counts, or fractions of the blocks; K = 0 is the
  original), checked before any scoring so a bad K does not surface after minutes of work; at
  least one K must select a block."""
  counts = [blocks.resolve_k(k, num_blocks) for k in ks]
  if not any(counts):
    raise ValueError(f"config.ks={tuple(ks)} selects no block of {num_blocks}: give a count >= 1 "
                     f"or a fraction >= {0.5 / num_blocks:.3f}")
  return counts
