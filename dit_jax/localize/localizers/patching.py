"""The activation-patching localizer (causal mediation, in the spirit of Basu et al., ICLR 2024):
how much of the concept returns when the neutral prompt runs but block l's image-token output is
restored from the concept prompt's run, from the same noise, at every step (docs/design.md,
"Localizers"): the restoring direction of the withhold.

    score[l] = presence(neutral prompt, block l restored) - presence(neutral prompt alone)

Both runs share one batch (interventions.BlockEdit: the neutral rows read the concept rows' block
output; the concept rows are never edited); under classifier-free guidance only the conditional
half. Cost per concept: (num_blocks + 1) sampling runs of twice the (prompt, seed) rows (the
neutral and the concept run together) plus as many judge calls, vmapped in chunks of
config.intervention_chunk.
"""
from __future__ import annotations

import numpy as np

from dit_jax.localize.localizers import Localizer, common


def score(pipe, pairs, seeds, size, batch_size, judge=None, chunk: int = 4):
  del batch_size
  common.require_judge(judge, "patching")
  masks = common.single_block_masks(pipe.module.config.num_blocks)
  images = common.run_block_edits(pipe, [p.neutral for p in pairs], list(seeds), size,
                                  bypass=np.zeros_like(masks), patch=masks, chunk=chunk,
                                  restore_from=[p.prompt for p in pairs])
  judged = common.presence(judge, images, pairs, seeds)
  return common.record("patching", pairs, seeds, pipe, judged[1:] - judged[0], judged[1:], judged[0])


PATCHING = Localizer("patching", score, needs_judge=True)
