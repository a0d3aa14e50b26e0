"""The records a localization run produces, typed, with one vocabulary for the two score variants.

    "with_wo"     ||concat_h(sum_J A v) W_O||, the paper's attention contribution (W_O without bias)
    "without_wo"  ||concat_h(sum_J A v)||, which the authors later found gives a stronger signal

Score arrays from the models carry the variants on their last axis, in VARIANTS order. Records are
written as JSON (asdict) and read back with from_dict, so a finished run can be re-analysed.
"""
from __future__ import annotations

import dataclasses

import numpy as np

VARIANTS = ("with_wo", "without_wo")


def variant_index(variant: str) -> int:
  """The position of `variant` on the last axis of every score array."""
  if variant not in VARIANTS:
    raise ValueError(f"score variant {variant!r}: use one of {VARIANTS}")
  return VARIANTS.index(variant)


@dataclasses.dataclass(frozen=True)
class ScoreRecord:
  """Per-block scores of one concept (block order: config.block_names), from one localizer.

  with_wo / without_wo: the attention localizer's two variants; a localizer with one score (the
  intervention ones: causal, bypass, patching) gives it under both. Intervention localizers also
  record the judge's presence in each block's run, the baseline run's presence the score is taken
  against, and (bypass) the mean absolute pixel change of each block's run from the original.
  Records written before these fields existed read back with them empty.
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

  def scores(self, variant: str) -> np.ndarray:
    variant_index(variant)
    return np.asarray(getattr(self, variant), float)

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

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, data: dict) -> "InterventionRow":
    return cls(**data)
