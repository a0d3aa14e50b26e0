"""DreamBooth with prior preservation (Ruiz et al. 2023)."""
from __future__ import annotations

from collections.abc import Callable

import jax

from dit_jax import training
from dit_jax.objectives import Objective


def personalization_loss(apply: Callable, alphas_cumprod, prediction_type: str,
                         prior_weight: float = 1.0) -> Callable:
  """DreamBooth with prior preservation. batch: images/caption/caption_mask of the subject and
  prior_images/prior_caption/prior_caption_mask of its class, drawn by the frozen model."""
  as_backbone = lambda p, x, t, b: apply(p, x, t, b["caption"], b["caption_mask"])

  def loss_fn(params, batch, key, teacher):
    del teacher
    subject_key, prior_key = jax.random.split(key)
    prior = {"images": batch["prior_images"], "caption": batch["prior_caption"],
             "caption_mask": batch["prior_caption_mask"]}
    return (training.diffusion_loss(as_backbone, params, batch, subject_key, alphas_cumprod,
                                    prediction_type)
            + prior_weight * training.diffusion_loss(as_backbone, params, prior, prior_key,
                                                     alphas_cumprod, prediction_type))

  return loss_fn


PERSONALIZATION = Objective(
    "personalization", data="subject",
    make_loss=lambda apply, alphas, prediction_type, config: personalization_loss(
        apply, alphas, prediction_type, config.prior_weight))
