"""The denoising loss, and DreamBooth with prior preservation (Ruiz et al. 2023)."""
from __future__ import annotations

from collections.abc import Callable

import jax

from dit_jax.diffusion.noising import Noising, weighted_mse
from dit_jax.train.objectives import Objective


def denoising_loss(model: Callable, noising: Noising, params, x0, cond, key):
  noisy, t, target, weight = noising.sample(key, x0)
  return weighted_mse(model(params, noisy, t, cond), target, weight)


def diffusion_loss(model: Callable, noising: Noising) -> Callable:
  def loss_fn(params, batch, key, teacher):
    del teacher
    return denoising_loss(model, noising, params, batch["x0"], batch["cond"], key)
  return loss_fn


def personalization_loss(model: Callable, noising: Noising, prior_weight: float = 1.0) -> Callable:
  """DreamBooth with prior preservation. batch: x0/cond of the subject and prior: {x0, cond} of
  its class, drawn by the frozen model."""

  def loss_fn(params, batch, key, teacher):
    del teacher
    subject_key, prior_key = jax.random.split(key)
    loss = denoising_loss(model, noising, params, batch["x0"], batch["cond"], subject_key)
    if "prior" in batch and prior_weight:
      prior = batch["prior"]
      loss = loss + prior_weight * denoising_loss(model, noising, params, prior["x0"], prior["cond"],
                                                  prior_key)
    return loss

  return loss_fn


DIFFUSION = Objective("diffusion", data="images",
                      make_loss=lambda model, noising, config: diffusion_loss(model, noising))
PERSONALIZATION = Objective(
    "personalization", data="subject",
    make_loss=lambda model, noising, config: personalization_loss(
        model, noising, config.get("prior_weight", 1.0)))
