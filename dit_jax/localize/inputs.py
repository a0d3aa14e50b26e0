"""What each stage of a localization run is computed from, so a rerun resumes only results of the
same inputs (dit_jax/provenance.py). A stage's inputs are its config subtree, the subtrees of the
stages it reads, and the model (its identity and a fingerprint of its weights): a key's place in
the config (configs/common.py) decides which results it renews, with no list of keys to keep by
hand. What says only where results go or how the work is laid out (out_dir, set_cache, fresh,
score_only, config.hosts, config.verdict: recomputed from the rows at every report) is no input.
"""
from __future__ import annotations

import os

from dit_jax import provenance
from dit_jax.localize import localizers, setcache

# What each stage writes under out_dir, cleared by --config.fresh=True when its inputs changed.
OUTPUTS = {"scores": ("scores", "scores.json", "scores.csv", "heatmap.png"),
           "interventions": ("interventions", "interventions.jsonl", "interventions.csv", "grids",
                             "curves", "summary.txt", "summary.json", "auto_k.json", "verdict.json",
                             "maps", "report.html")}


def model_inputs(config) -> dict:
  """Which network computes: the family, its precision and text length, and its weights (a Hub
  id's revision is in the path it resolved to, so the fingerprint covers it)."""
  return {"model": config.model, "dtype": config.dtype,
          "max_sequence_length": config.max_sequence_length,
          "weights": provenance.weights_fingerprint(config.checkpoint)}


def score_stage(name: str) -> str:
  """The provenance stage of a localizer's records: the attention's is "scores", as it always was."""
  return "scores" if name == "attention" else f"scores_{name}"


def score_dir(out: str, name: str) -> str:
  return os.path.join(out, "scores") if name == "attention" else os.path.join(out, "scores", name)


def score_inputs(model: dict, sample, knowledge, score, name: str, judge) -> dict:
  """Localizer `name`'s scores: each localizer is a stage of its own (adding one keeps the others'
  scores), so config.score enters without the list of localizers; one that judges images depends
  on the judge too."""
  score = {k: v for k, v in provenance.as_json(score).items() if k != "localizers"}
  judged = {"judge": judge.describe()} if localizers.get(name).needs_judge else {}
  return {"model": model, "sample": provenance.as_json(sample),
          "knowledge": provenance.as_json(knowledge), "score": {**score, "localizer": name},
          **judged}


def sweep_inputs(model: dict, sample, knowledge, sweep, ranked: dict, judge) -> dict:
  """The sweep's judged rows: its subtree, the sampler, the concepts, the judge, and the scores
  of the localizer whose ranking it follows (`ranked`: their inputs, entered by digest)."""
  return {"model": model, "sample": provenance.as_json(sample),
          "knowledge": provenance.as_json(knowledge), "sweep": provenance.as_json(sweep),
          "judge": judge.describe(), "scores": setcache.digest(ranked)}


def check_inputs(config, workdir: str, judge) -> None:
  """Resume only results computed from these inputs (provenance.resume): a changed stage is
  refused naming what changed, or cleared with config.fresh."""
  model = model_inputs(config)
  stages, outputs = {}, dict(OUTPUTS)
  scores = {name: score_inputs(model, config.sample, config.knowledge, config.score, name, judge)
            for name in {*config.score.localizers, config.sweep.localizer}}
  for name in config.score.localizers:
    stages[score_stage(name)] = scores[name]
    outputs.setdefault(score_stage(name), (os.path.relpath(score_dir(workdir, name), workdir),))
  if judge is not None:   # a scoring-only run without a judge leaves the sweep's record as it is
    stages["interventions"] = sweep_inputs(model, config.sample, config.knowledge, config.sweep,
                                           scores[config.sweep.localizer], judge)
  try:
    provenance.resume(workdir, stages, outputs, config.fresh)
  except provenance.StaleResults as error:
    raise SystemExit(str(error))
