"""Localization and causal validation of knowledge in DiT blocks: run(config, workdir).

    python localize.py --config configs/shapes.py                 # the shipped Shapes model, CPU
    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-512x512

The job is its stages, in order (Localization.run), each reading its config subtree:
  score    config.score: every localizer's block scores of each concept on its train prompts,
           averaged over timesteps and seeds (scores/, scores.json/csv, heatmap.png, agreement.json)
  sweep    config.sweep: one vmapped sweep of block interventions per concept on the eval prompts
           (top-K, bottom-K, random-K and depth-matched draws or every K-set, reverse, windows of
           sampling steps), judged set by set through the set cache (interventions/, grids/)
  judge    the judge's thresholds calibrated on the neutral prompts; each row's hits
  verdict  config.verdict: the exact hierarchy, the summary's entries, the automatic K, once
  report   interventions.csv, curves/, summary.txt, verdict.json, auto_k.json, maps/, report.html
(stages.py: score and sweep; conclude.py: judge, verdict and report; inputs.py: what each stage's
results are computed from, so a rerun resumes only results of the same inputs.) Each concept's
results are written as soon as they exist, and a rerun skips what is already on disk.
config.sweep.withhold says what the selected blocks read instead of the concept
(dit_jax/localize/withhold.py).

Several localizers (config.score.localizers) can score the same concepts; config.sweep.localizer,
one of them, ranks the blocks for the sweep and fills scores.json. Each localizer's records go to
scores/<localizer>/<concept>.json (the attention's to scores/<concept>.json, where runs always kept
them), and agreement.json / agreement.png compare them per category (dit_jax/localize/agreement.py).

Devices and hosts (config.hosts, dit_jax/localize/hosts.py; README, "What runs where"): one
process splits every sweep's interventions and every scoring batch over its devices; several
processes split the concepts, concepts[index::count], each writing only its concepts' files; a run
with config.hosts.merge_only then writes the reports from them, the same as one process would.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
import warnings

import numpy as np
from tqdm import tqdm

from dit_jax import blocks, cli, knowledge
from dit_jax.files import read_json, write_json
from dit_jax.localize import conclude, hosts, inputs, judges, localizers, stages, sweep, withhold
from dit_jax.localize.inputs import score_dir
from dit_jax.localize.stages import slug
from dit_jax.pipeline import checks
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.verdict import sets


def run(config, workdir: str) -> list[dict]:
  """Score, sweep, judge, decide and report every concept of the config's knowledge set into
  `workdir`; returns the judged intervention rows."""
  out = os.fspath(workdir)
  started = time.time()
  validate_localize_config(config)
  cli.make_out_dir(out)
  if config.hosts.distributed:   # the hosts' indices are jax's, known only once they have joined
    return localize_into(config, out, started)
  with cli.out_dir_lock(out, hosts.lock_name(config.hosts)):
    return localize_into(config, out, started)


def localize_into(config, out: str, started: float) -> list[dict]:
  """run() in the out_dir it holds: the checks and the model, then the stages."""
  withhold.check_operator(config.sweep.withhold)   # bad choices are named before any work
  sweep.time_windows(config.sweep.time_windows, config.sample.num_steps)
  hosts.join_processes(config.hosts)               # before any computation, as jax.distributed asks
  index, count = hosts.process_share(config.hosts)
  merge_only = config.hosts.merge_only
  if merge_only and config.fresh:
    raise ValueError("merge_only with fresh=True: the merge reads the processes' results, and fresh "
                     "would clear those of other inputs; rerun the processes with fresh instead")
  if config.score_only and merge_only:
    raise ValueError("score_only with merge_only: a scoring-only run has no intervention results to "
                     "merge; drop one of them")
  if merge_only and index:
    print(f"merge_only: process 0 merges; process {index} of {count} has nothing to do")
    return []
  split = count > 1 and not merge_only   # this process: its share of the concepts only
  cli.import_plugins(config)
  if merge_only:   # it computes nothing: every concept's files must be there, named first
    concepts = load_knowledge(config.knowledge).all_concepts
    hosts.require_results(expected_results(config.score.localizers, out, concepts), out)
  checks.require_checkpoint(config)
  checks.require_pipeline(config)
  sample = config.sample
  pipe = Text2Image(config.model, config.checkpoint, num_steps=sample.num_steps,
                    guidance_scale=sample.guidance_scale, dtype=checks.DTYPES[config.dtype],
                    cache_dir=os.path.join(out, "prompt_cache"),
                    max_sequence_length=config.max_sequence_length or None)
  pipe.use_local_devices(config.hosts.num_devices, config.hosts.fsdp)
  num_blocks = pipe.module.config.num_blocks
  validate_ks(config.sweep.ks, num_blocks)
  full = full_knowledge(config.knowledge)
  knowledge_set = load_knowledge(config.knowledge, full)
  check_localizers(config.score, config.sweep)
  judge = make_judge(config.judge, full) if needs_judge(config.score_only, config.score) else None
  inputs.check_inputs(config, out, judge)
  record = lambda **extra: write_json(os.path.join(out, "run.json"), {
      "config": config.to_dict(), "judge": judge and judge.describe(), "num_blocks": num_blocks,
      "ks": stages.grid(config.sweep, num_blocks), **extra})
  concepts = list(knowledge_set.all_concepts)
  # One of several processes writes only its concepts' files (nothing every process would write).
  share = concepts[index::count] if split else concepts
  earlier = earlier_seconds(out, config.fresh)   # read before record() starts this run's run.json
  if not split:
    record()
  saved = lambda: saved_line(out, share, config.sweep.localizer, config.score_only)
  say_resumed(out, share, config.sweep.localizer, config.score_only, earlier)
  localization = Localization(config, pipe, knowledge_set, judge, out, share, split)
  try:
    rows = localization.run()
  except KeyboardInterrupt:
    stop_on_interrupt(out, saved(), config.set_cache or os.path.join(out, "set_cache"), split,
                      record, earlier + time.time() - started)
  seconds = earlier + time.time() - started
  if split:
    print(f"process {index} of {count}: results of {len(share)} of {len(concepts)} concepts in "
          f"{out}; when every process has finished, merge them: localize.py with the same config "
          "and --config.hosts.merge_only=True")
    return rows
  record(seconds=round(seconds, 1), **({"score_only": True} if config.score_only else
                                        {"load_average": [round(x, 2) for x in os.getloadavg()]}))
  if config.score_only:
    print(f"scores of {len(share)} concepts in {out}/scores.json (score_only: no interventions)")
    return rows
  print(localization.console)
  page = conclude.write_page(out)     # after run.json has the time: the page shows it
  if localization.verdict.answer:
    print("\n".join(localization.verdict.answer))
  print(f"results in {out} ({seconds:.0f}s); open {page}")
  return rows


class Localization:
  """The job's stages in order, each on its config subtree: score -> sweep -> judge -> verdict
  -> report. Each writes its own files, once; a split process stops after the sweep (the merge
  judges and reports every concept together)."""

  def __init__(self, config, pipe, knowledge_set, judge, out: str, concepts, split: bool):
    self.config, self.pipe, self.knowledge_set, self.judge = config, pipe, knowledge_set, judge
    self.out, self.concepts, self.split = out, concepts, split
    self.num_blocks = pipe.module.config.num_blocks
    self.labels = pipe.module.config.block_labels
    self.windows = sweep.time_windows(config.sweep.time_windows, config.sample.num_steps)
    self.verdict, self.console = None, ""

  def run(self) -> list[dict]:
    config = self.config
    every = self.score()
    ks = stages.grid(config.sweep, self.num_blocks)
    if not self.split:
      conclude.report_scores(every, config.sweep.localizer, config.sweep.score_variant,
                             ks[len(ks) // 2], self.out, self.labels)
    if config.score_only:     # a ranking is all that is asked for (e.g. train.py's --config.blocks)
      return []
    rows, shown = self.sweep(every[config.sweep.localizer])
    conclude.report_grids(shown, self.out)
    if self.split:
      return rows
    rows = conclude.calibrate(self.judge, rows)
    self.verdict = conclude.decide(rows, self.knowledge_set.categories, config.verdict)
    self.console = conclude.report(rows, self.verdict, self.knowledge_set.categories,
                                   every[config.sweep.localizer], self.windows, self.labels, self.out)
    self.console += "\n" + conclude.auto_k_table(self.verdict.auto_k, config.verdict.presence_target)
    return rows

  def score(self) -> dict:
    """localizer -> concept -> its score record (scores/<localizer>/<concept>.json)."""
    config = self.config
    return {name: stages.score_concepts(self.pipe, config.sample, config.score, self.knowledge_set,
                                        self.concepts, self.out, name, self.judge,
                                        config.hosts.intervention_chunk)
            for name in config.score.localizers}

  def sweep(self, scores: dict) -> tuple[list[dict], dict]:
    """Every concept's rows (interventions/<concept>.json, written once), and the images of the
    sets the grids of the concepts swept now show."""
    config = self.config
    model = {k: config[k] for k in ("model", "checkpoint", "dtype", "max_sequence_length")}
    cache_folder = config.set_cache or os.path.join(self.out, "set_cache")
    rows, shown = [], {}
    for concept in tqdm(self.concepts, desc="interventions"):
      path = os.path.join(self.out, "interventions", f"{slug(concept)}.json")
      if not os.path.exists(path):
        ranking = blocks.rank_blocks(np.asarray(scores[concept][config.sweep.score_variant]))
        pairs = self.knowledge_set.pairs(concept, "eval")
        concept_sweep = stages.ConceptSweep(
            self.pipe, model, config.sample, config.sweep, self.judge, pairs, self.knowledge_set,
            cache_folder, config.hosts.intervention_chunk)
        plan = stages.plan_concept(config.sample, config.sweep, ranking, self.num_blocks, concept)
        concept_rows, images = concept_sweep.rows(plan)
        write_json(path, concept_rows)
        shown[concept] = (images, [p.prompt for p in concept_sweep.expanded])
      rows += read_json(path)
    return rows, shown


def full_knowledge(chosen) -> knowledge.KnowledgeSet:
  """The whole knowledge set config.knowledge names, with its prompts_per_concept prompts where the
  set makes them on demand."""
  return knowledge.load_knowledge(chosen.set, chosen.prompts_per_concept or None, chosen.prompt_seed)


def load_knowledge(chosen, full: knowledge.KnowledgeSet | None = None) -> knowledge.KnowledgeSet:
  """The part of the knowledge set a run localizes (config.knowledge); asking for more prompts than
  a concept has is an error (KnowledgeSet.subset)."""
  full = full or full_knowledge(chosen)
  return full.subset(categories=list(chosen.categories) or None,
                     concepts=list(chosen.concepts) or None,
                     per_category=chosen.concepts_per_category or None,
                     prompts_per_concept=chosen.prompts_per_concept or None)


def make_judge(judge, full: knowledge.KnowledgeSet) -> judges.Judge:
  """config.judge's judge, built on the whole knowledge set: CLIP compares a concept with every
  concept of its category (and the neutral phrase), not only with those this run localizes."""
  return judges.make_judge(judge.name, full, **judge.args)


def needs_judge(score_only: bool, score) -> bool:
  """A judge is built only where one is used: the sweep judges every image, and a localizer with
  needs_judge judges images to score; a scoring-only run of the others needs none (so no CLIP
  weights either)."""
  return not score_only or any(localizers.get(n).needs_judge for n in score.localizers)


def check_localizers(score, sweep_config) -> None:
  """Every scoring localizer exists (an unknown one is named before any work), none twice, and the
  one whose ranking the sweep follows is among them."""
  names = list(score.localizers)
  if not names:
    raise ValueError("config.score.localizers is empty: name at least the ranking one, "
                     "config.sweep.localizer")
  for name in names:
    localizers.get(name)
  if len(set(names)) != len(names):
    raise ValueError(f"config.score.localizers names a localizer twice: {names}")
  if sweep_config.localizer not in names:
    raise ValueError(f"config.sweep.localizer={sweep_config.localizer!r} ranks the blocks, so it must "
                     f"score too: add it to config.score.localizers={tuple(names)}")


def expected_results(localizer_names, out: str, concepts) -> list[str]:
  """Every file a merge reads: each localizer's scores and the interventions of every concept."""
  expected = [os.path.join(score_dir(out, name), f"{slug(c)}.json")
              for name in localizer_names for c in concepts]
  return expected + [os.path.join(out, "interventions", f"{slug(c)}.json") for c in concepts]


def earlier_seconds(out: str, fresh: bool) -> float:
  """The compute time recorded in run.json by the runs whose results this one resumes (0 for a
  fresh start): run.json's seconds stay the time the results took, not the last rerun's."""
  path = os.path.join(out, "run.json")
  if fresh or not os.path.exists(path):
    return 0.0
  try:
    return float(read_json(path).get("seconds") or 0.0)
  except (ValueError, AttributeError, TypeError):
    return 0.0


def on_disk(out: str, concepts, localizer: str) -> tuple[int, int]:
  """How many of `concepts` have the ranking localizer's scores, and interventions, on disk."""
  have = lambda folder: sum(os.path.exists(os.path.join(folder, f"{slug(c)}.json")) for c in concepts)
  return have(score_dir(out, localizer)), have(os.path.join(out, "interventions"))


def saved_line(out: str, concepts, localizer: str, score_only: bool) -> str:
  scored, swept = on_disk(out, concepts, localizer)
  line = f"scores of {scored} of {len(concepts)} concepts"
  return line if score_only else line + f", interventions of {swept} of {len(concepts)}"


def say_resumed(out: str, concepts, localizer: str, score_only: bool, earlier: float) -> None:
  """A rerun says what it takes from disk (each concept's results are kept once written)."""
  scored, swept = on_disk(out, concepts, localizer)
  if scored or swept:
    done = scored == len(concepts) and (score_only or swept == len(concepts))
    print(f"resuming {out}: {saved_line(out, concepts, localizer, score_only)} are on disk "
          f"(computed in {earlier:.0f} s, which the times reported below include); "
          f"{'only the reports are rebuilt' if done else 'computing the rest'}", flush=True)


def stop_on_interrupt(out: str, saved: str, cache_folder: str, split: bool, record, seconds: float):
  """Ctrl-C: say what is saved and the command that resumes it; run.json keeps the compute time
  so far, which the rerun adds to. Exits 130, as a shell does on SIGINT."""
  if not split:
    record(seconds=round(seconds, 1), interrupted=True)
  command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
  print(f"\ninterrupted after {seconds:.0f} s; saved in {out}: {saved} (each concept's results are "
        f"written as soon as they exist; of the one under way, every judged set is kept in "
        f"{cache_folder}).\nTo resume, rerun the same command with the same out_dir:\n  {command}",
        flush=True)
  raise SystemExit(130)


def validate_localize_config(config) -> None:
  """localize.py: scores are averaged over the seeds, and the sweep needs a K (the first also
  marks the heatmap); an old flat key set in Python is named with its new place."""
  cli.stray_moved_keys(config)
  cli.require_nonempty(config, "sample.seeds", "sweep.ks")
  cli.check_k_values(config.sweep.ks)
  cli.require_positive(config, "sample.num_steps", "hosts.intervention_chunk", "score.batch_size")
  sweep_config = config.sweep
  if sweep_config.pooled_swap and sweep_config.time_windows:
    raise ValueError("config.sweep.pooled_swap with config.sweep.time_windows: the pooled CLIP vector "
                     "reaches every sampling step through the modulation, so a windowed intervention "
                     "cannot swap it; run the windows with --config.sweep.pooled_swap=False")
  if sweep_config.exact_limit and not sweep_config.random_overlap:
    raise ValueError("config.sweep.random_overlap=False with the exact verdict "
                     "(config.sweep.exact_limit): its null is every K-block set, top-K's blocks "
                     "included; leave random_overlap=True")
  if sweep_config.random_draws < 1:
    raise ValueError(f"config.sweep.random_draws={sweep_config.random_draws}: the verdict ranks top-K "
                     "among random K-sets, so it needs at least one (200 by default)")
  for key, flag in (("random_draws", "removable"), ("reverse_draws", "sufficient")):
    draws = sweep_config[key]
    # p = (1 + #sets at least as extreme) / (R + 1) >= 1 / (R + 1), and BH only raises it.
    if draws > 0 and 1 / (draws + 1) >= sets.ALPHA:
      warnings.warn(f"config.sweep.{key}={draws}: with {draws} random K-sets the set-level p cannot "
                    f"go below 1/{draws + 1} = {1 / (draws + 1):.3f}, so no cell can be '{flag}' at "
                    f"{sets.ALPHA} (docs/design.md, \"Verdict\")", stacklevel=2)


def validate_ks(ks, num_blocks: int) -> list[int]:
  """The K grid as block counts in 0..num_blocks (counts, or fractions of the blocks; K = 0 is the
  original), checked before any scoring so a bad K does not surface after minutes of work; at
  least one K must select a block."""
  counts = [blocks.resolve_k(k, num_blocks) for k in ks]
  if not any(counts):
    raise ValueError(f"config.sweep.ks={tuple(ks)} selects no block of {num_blocks}: give a count "
                     f">= 1 or a fraction >= {0.5 / num_blocks:.3f}")
  return counts
