"""Training objectives, looked up by name: config.objective -> Objective.

Every objective is a loss_fn(params, batch, key, teacher) for training.make_train_step, built by
make_loss(model, noising, config) where `model(params, x_t, t, cond)` is the family's prediction
on a training batch (families.Family.predictor without classifier-free guidance; FLUX-dev with its
distilled guidance input) and `noising` the forward process its scheduler config describes
(dit_jax.diffusion.noising: DDPM epsilon / v, or rectified flow with a velocity target). `teacher` is the
frozen copy of the trainable parameters before fine-tuning (None when the objective needs none).

Batches are trees: {"x0": latents (B, H, W, C), "cond": text states of their captions, ...}.

  diffusion         the plain denoising loss (pretraining, fine-tuning on captioned images).
  personalization   DreamBooth: the denoising loss on a few images of a subject captioned with a
                    rare token, plus prior_weight x the loss on the frozen model's own images of the
                    subject's class (batch["prior"]: prior preservation).
  esd, ablation     The student, given the concept's caption, regresses to the frozen teacher's
                    prediction moved away from the concept:
                        target = teacher(anchor) - guidance * (teacher(concept) - teacher(anchor))
                    ESD (Gandikota et al. 2023): guidance > 0. Concept ablation (Kumari et al.
                    2023): guidance = 0, the concept's prompt predicts what the anchor's does.
                    The anchor (batch["anchor"]) is the caption with the concept replaced by its
                    neutral phrase, or the unconditional (objectives' data, dit_jax/train/data.py).
                    For flow models the predictions are velocities.

A new objective is one file here defining an Objective and one line in REGISTRY.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dit_jax import registry

# name -> "module:attribute" of its Objective. The one line a new objective adds.
REGISTRY = registry.Registry("objective", {
    "diffusion": "dit_jax.train.objectives.personalization:DIFFUSION",
    "personalization": "dit_jax.train.objectives.personalization:PERSONALIZATION",
    "esd": "dit_jax.train.objectives.unlearning:ESD",
    "ablation": "dit_jax.train.objectives.unlearning:ABLATION",
})


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  # make_loss(model, noising, config) -> loss_fn(params, batch, key, teacher)
  make_loss: Callable
  data: str            # "images" (captioned), "subject" (+ class prior) or "concept" (+ anchor)
  needs_teacher: bool = False


names, get = REGISTRY.names, REGISTRY.get   # get(name) -> Objective; an unknown name lists the known ones
