"""The paper's localizer: the attention contribution of the concept's tokens in every block, with
W_O (no bias), without W_O, and exactly as the paper's code computes it (variants.VARIANTS),
averaged over prompts, seeds and timesteps (docs/design.md, "The method").

Cost per concept: one sampling run of every (prompt, seed) image with the scores read off the
attention on the way (no judge, no extra runs): the cheapest localizer by a factor of num_blocks.
"""
from __future__ import annotations

from collections.abc import Sequence

from dit_jax.localize import sweep
from dit_jax.knowledge import PromptPair
from dit_jax.localize.localizers import Localizer
from dit_jax.models.variants import VARIANTS, variant_index
from dit_jax.localize.records import ScoreRecord


def score(pipe, pairs: Sequence[PromptPair], seeds: Sequence[int], size: tuple[int, int],
          batch_size: int, judge=None, chunk: int | None = None) -> ScoreRecord:
  del judge, chunk   # read off the attention of plain runs: nothing judged, nothing swept
  scores = sweep.concept_scores(pipe, [p.prompt for p in pairs], [p.concept for p in pairs],
                                       list(seeds), size, batch_size)   # (N, steps, blocks, V)
  mean = scores.mean(axis=(0, 1))                                      # (blocks, V)
  variants = {v: mean[:, variant_index(v)].tolist() for v in VARIANTS}
  return ScoreRecord(category=pairs[0].category, **variants,
                     per_step_with_wo=scores.mean(axis=0)[:, :, variant_index("with_wo")].tolist(),
                     num_prompts=len(pairs), num_seeds=len(seeds), num_steps=scores.shape[1])


ATTENTION = Localizer("attention", score, variants=VARIANTS)
