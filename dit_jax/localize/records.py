"""The records a localization run produces, typed, with one vocabulary for the score variants.

    "with_wo"     ||concat_h(sum_J A v) W_O||, the formula of the paper (arXiv 2505.18832) with W_O
                  without its bias (the bias is no part of the concept's contribution), the same
                  in every block type (FLUX single blocks: the attention rows of proj_out)
    "without_wo"  ||concat_h(sum_J A v)||, which the authors later found gives a stronger signal
    "paper"       exactly what the paper's public code computes (github ArmanZarei/
                  DiT-Knowledge-Localization; docs/design.md, "The method"): W_O with its bias
                  (to_out[0]) in PixArt's and SANA's cross-attention and FLUX's double blocks, no
                  W_O at all in FLUX's single blocks (their attention has no to_out). SD3, not in
                  the paper: W_O with its bias in every joint block, by analogy

Score arrays from the models carry the variants on their last axis, in VARIANTS order. Records are
written as JSON (asdict) and read back with from_dict, so a finished run can be re-analysed; records
written before "paper" existed read back without it, and asking them for it is an error that says so.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dit_jax.models.variants import stored_scores


@dataclasses.dataclass(frozen=True)
class ScoreRecord:
  """Per-block scores of one concept (block order: config.block_names), from one localizer.

  with_wo / without_wo / paper: the attention localizer's variants (VARIANTS); a localizer with one
  score (the intervention ones: causal, bypass, patching) gives it under each. Intervention
  localizers also record the judge's presence in each block's run, the baseline run's presence the
  score is taken against, and (bypass) the mean absolute pixel change of each block's run from the
  original.
  Records written before these fields existed read back with them empty ("paper" too: scores()
  then refuses it, stored_scores).
  """
  category: str
  with_wo: list[float]
  without_wo: list[float]
  per_step_with_wo: list[list[float]]   # (steps, blocks), for block x timestep maps
  num_prompts: int
  num_seeds: int
  num_steps: int
  localizer: str = "attention"
  presence: list[float] = dataclasses.field(default_factory=list)
  baseline: float | None = None
  image_change: list[float] = dataclasses.field(default_factory=list)
  paper: list[float] = dataclasses.field(default_factory=list)

  def scores(self, variant: str) -> np.ndarray:
    return np.asarray(stored_scores(self.to_dict(), variant), float)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict) -> "ScoreRecord":
    return cls(**data)


@dataclasses.dataclass(frozen=True)
class InterventionRow:
  """The judged outcome of one intervention on one concept's eval prompts.

  kind: "none" (the original, K=0), "top", "bottom", "random" (draw 0..), "depth_random" (draw 0..:
  random K blocks with the top-K's count in each third of the blocks), "reverse" (the concept
  prompt only in the selected blocks), "reverse_random" (the same in a random-K draw's blocks),
  "neutral" (the neutral prompt in every block), "single" (one block); a suffix ("+pooled",
  "+residual") marks a variant intervention reported apart. presence: the judge's mean presence of
  the concept; other: category -> the judge's accuracy on the categories the intervention did not
  target. random_overlap: whether the sweep's random-K draws could share blocks with the top-K.
  scores: the judge's presence per image (prompt-major: prompt i, seed j at i * seeds + j), the
  (prompt, seed) units of the summary's intervals and paired tests; hits: the share of them at or above the
  judge's threshold, set once the threshold is calibrated on the neutral rows (None before).
  window: the sampling steps the intervention acted on ("all", or a time window's name,
  localization.TimeWindow); a windowed row's kind carries it too ("top@early", "single@late",
  "all@middle": every block in the window), so the all-steps analysis never mixes it in. Rows
  written before windows existed have no window: read them as "all".
  seeds: seeds per prompt (the units' nesting, for the hierarchical bootstrap of dit_jax/verdict/sets.py);
  chance: the judge's chance level of the category (None: the judge states none); context: per
  image, how well the rest of the prompt is kept (the Shapes judge: the other categories' accuracy;
  CLIP: similarity to the neutral prompt), the specificity test's units; unit_hits: per image, 1
  where the score is at or above the judge's (calibrated) threshold, set with `hits`.
  """
  concept: str
  category: str
  kind: str
  k: int
  draw: int
  blocks: list[int]
  presence: float
  other: dict[str, float]
  random_overlap: bool | None = None
  scores: list[float] = dataclasses.field(default_factory=list)
  hits: float | None = None
  window: str = "all"
  seeds: int = 1
  chance: float | None = None
  context: list[float] = dataclasses.field(default_factory=list)
  unit_hits: list[float] = dataclasses.field(default_factory=list)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict) -> "InterventionRow":
    return cls(**data)
