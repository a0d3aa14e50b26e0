"""Unlearning: ESD (Gandikota et al. 2023) and concept ablation (Kumari et al. 2023), one loss."""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from dit_jax import training
from dit_jax.objectives import Objective


def unlearning_loss(apply: Callable, alphas_cumprod, guidance: float) -> Callable:
  """ESD / concept ablation (see the module docstring). batch: images of the concept,
  caption/caption_mask naming it, anchor_caption/anchor_caption_mask."""

  def loss_fn(params, batch, key, teacher):
    noisy, t, _ = training.add_noise(batch["images"], key, alphas_cumprod)
    # The frozen blocks are shared; only the trainable ones differ from the teacher.
    teacher_params = training.merge_params(teacher, traverse_util.flatten_dict(params))
    frozen_apply = lambda caption, mask: jax.lax.stop_gradient(
        apply(teacher_params, noisy, t, caption, mask))
    anchor = frozen_apply(batch["anchor_caption"], batch["anchor_caption_mask"])
    target = anchor
    if guidance:
      target = anchor - guidance * (frozen_apply(batch["caption"], batch["caption_mask"]) - anchor)
    student = apply(params, noisy, t, batch["caption"], batch["caption_mask"])
    channels = batch["images"].shape[-1]
    return jnp.mean((student[..., :channels] - target[..., :channels]) ** 2)

  return loss_fn


ESD = Objective("esd", data="concept", anchor="neutral",
                make_loss=lambda apply, alphas, prediction_type, config: unlearning_loss(
                    apply, alphas, guidance=1.0))
ABLATION = Objective("ablation", data="concept", anchor="neutral",
                     make_loss=lambda apply, alphas, prediction_type, config: unlearning_loss(
                         apply, alphas, guidance=0.0))
