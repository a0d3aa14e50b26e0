"""The causal withhold localizer: how much of the concept is lost when only block l reads the
neutral text (docs/design.md, "Localizers": the single-block intervention sweep).

    score[l] = presence(original) - presence(the neutral text in block l only)

The intervention is the sweep's own (sweep.run_interventions: PixArt/SANA cross-attention
text, FLUX/SD3 attention text input), judged by the run's judge on the concept's prompts.
Cost per concept: (num_blocks + 1) sampling runs of every (prompt, seed) image -- FLUX's runs carry
the neutral trajectory in the same batch, so twice the rows -- plus as many judge calls; the runs
go num_blocks + 1 at a time in chunks of config.intervention_chunk, one compiled program.
"""
from __future__ import annotations

from dit_jax.localize import sweep
from dit_jax.localize.localizers import Localizer, common


def score(pipe, pairs, seeds, size, batch_size, judge=None, chunk: int = 4):
  del batch_size   # every (prompt, seed) row runs in one batch, as in the sweep
  common.require_judge(judge, "causal")
  n = pipe.module.config.num_blocks
  plan = [sweep.Intervention("none", 0, ())]
  plan += [sweep.Intervention("single", 1, (b,)) for b in range(n)]
  images = sweep.run_interventions(pipe, [p.prompt for p in pairs], [p.neutral for p in pairs],
                                          list(seeds), size, plan, chunk)
  judged = common.presence(judge, images, pairs, seeds)
  return common.record("causal", pairs, seeds, pipe, judged[0] - judged[1:], judged[1:], judged[0])


CAUSAL = Localizer("causal", score, needs_judge=True)
