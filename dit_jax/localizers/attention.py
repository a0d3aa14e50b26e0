"""The paper's localizer: the attention contribution of the concept's tokens in every block, with
and without W_O, averaged over prompts, seeds and timesteps (docs/design.md, "The method").

Cost per concept: one sampling run of every (prompt, seed) image with the scores read off the
attention on the way (no judge, no extra runs): the cheapest localizer by a factor of num_blocks.
"""
from __future__ import annotations

from collections.abc import Sequence

from dit_jax import localization
from dit_jax.knowledge import PromptPair
from dit_jax.localizers import Localizer
from dit_jax.results import VARIANTS, ScoreRecord, variant_index


def score(pipe, pairs: Sequence[PromptPair], seeds: Sequence[int], size: tuple[int, int],
          batch_size: int, judge=None, chunk: int | None = None) -> ScoreRecord:
  del judge, chunk   # read off the attention of plain runs: nothing judged, nothing swept
  scores = localization.concept_scores(pipe, [p.prompt for p in pairs], [p.concept for p in pairs],
                                       list(seeds), size, batch_size)   # (N, steps, blocks, 2)
  mean = scores.mean(axis=(0, 1))                                      # (blocks, 2)
  with_wo, without_wo = (variant_index(v) for v in VARIANTS)
  return ScoreRecord(category=pairs[0].category, with_wo=mean[:, with_wo].tolist(),
                     without_wo=mean[:, without_wo].tolist(),
                     per_step_with_wo=scores.mean(axis=0)[:, :, with_wo].tolist(),
                     num_prompts=len(pairs), num_seeds=len(seeds), num_steps=scores.shape[1])


ATTENTION = Localizer("attention", score, variants=VARIANTS)
