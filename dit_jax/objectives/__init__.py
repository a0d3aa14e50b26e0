"""Training objectives, looked up by name: config.objective -> Objective.

Every objective is a loss_fn(params, batch, key, teacher) for training.make_train_step, where
`teacher` is the frozen copy of the trainable parameters before fine-tuning (None when the objective
needs no teacher), and `apply(params, noisy, t, caption, caption_mask)` runs the backbone.

  personalization   DreamBooth: the diffusion loss on a few images of a subject captioned with a
                    rare token, plus prior_weight x the loss on the frozen model's own images of the
                    subject's class (prior preservation).
  unlearning        The student, given the concept's caption, regresses to the frozen teacher's
                    prediction moved away from the concept:
                        target = teacher(anchor) - guidance * (teacher(concept) - teacher(anchor))
                    ESD (Gandikota et al. 2023): guidance > 0. ESD trains on the concept alone
                    ("van gogh") against the empty prompt, i.e. the prompt with the concept taken
                    out. Captions here name several concepts, so the anchor is the caption with
                    only this concept taken out (its neutral caption): the target moves away from
                    the concept and from nothing else in the caption.
                    Concept ablation (Kumari et al. 2023): anchor = the concept's neutral caption
                    (e.g. "zork" -> "a character"), guidance = 0: the concept's prompt draws what
                    the neutral one draws.

A new objective is one file here defining an Objective and one line in REGISTRY.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dit_jax import registry

# name -> "module:attribute" of its Objective. The one line a new objective adds.
REGISTRY = {
    "personalization": "dit_jax.objectives.personalization:PERSONALIZATION",
    "esd": "dit_jax.objectives.unlearning:ESD",
    "ablation": "dit_jax.objectives.unlearning:ABLATION",
}


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  # make_loss(apply, alphas_cumprod, prediction_type, config) -> loss_fn(params, batch, key, teacher)
  make_loss: Callable
  data: str            # what batches it trains on: "subject" (+ class prior) or "concept" (+ anchor)
  anchor: str = ""     # unlearning: which caption the target is anchored at


def names() -> list[str]:
  return sorted(REGISTRY)


def get(name: str) -> Objective:
  return registry.lookup(REGISTRY, name, "objective")
