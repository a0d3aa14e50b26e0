"""The bypass localizer, in the spirit of Stable Flow's "vital layers" (Avrahami et al. 2025): how
much the concept's presence drops when block l's residual update is skipped (its image-token output
is its input) at every sampling step (docs/design.md, "Localizers").

    score[l]        = presence(original) - presence(block l bypassed)
    image_change[l] = mean |image(block l bypassed) - image(original)| over pixels, in 0..255

It measures how much a block matters at all, not the concept specifically: read the score next to
the image change. Under classifier-free guidance only the conditional half is bypassed
(interventions.BlockEdit). Cost per concept: (num_blocks + 1) sampling runs of every (prompt, seed)
image plus as many judge calls, num_blocks + 1 runs vmapped in chunks of config.intervention_chunk.
"""
from __future__ import annotations

import numpy as np

from dit_jax.localize.localizers import Localizer, common


def score(pipe, pairs, seeds, size, batch_size, judge=None, chunk: int = 4):
  del batch_size
  common.require_judge(judge, "bypass")
  masks = common.single_block_masks(pipe.module.config.num_blocks)
  images = common.run_block_edits(pipe, [p.prompt for p in pairs], list(seeds), size,
                                  bypass=masks, patch=np.zeros_like(masks), chunk=chunk)
  judged = common.presence(judge, images, pairs, seeds)
  change = np.abs(images[1:].astype(np.float32) - images[:1].astype(np.float32)).mean(axis=(1, 2, 3, 4))
  return common.record("bypass", pairs, seeds, pipe, judged[0] - judged[1:], judged[1:], judged[0],
                       image_change=[float(c) for c in change])


BYPASS = Localizer("bypass", score, needs_judge=True)
