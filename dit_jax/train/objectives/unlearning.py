"""Unlearning: ESD (Gandikota et al. 2023) and concept ablation (Kumari et al. 2023), one loss."""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import traverse_util

from dit_jax.train import loop
from dit_jax.diffusion.noising import Noising
from dit_jax.train.objectives import Objective


def unlearning_loss(model: Callable, noising: Noising, guidance: float) -> Callable:
  """ESD / concept ablation (see dit_jax.train.objectives). batch: x0 (images of the concept), cond (the
  captions naming it), anchor: {cond}. The target is in the model's own output space (noise, v
  or velocity), so the same loss serves DDPM and flow models."""

  def loss_fn(params, batch, key, teacher):
    noisy, t, _, weight = noising.sample(key, batch["x0"])
    # The frozen blocks are shared; only the trainable ones differ from the teacher.
    teacher_params = loop.merge_params(teacher, traverse_util.flatten_dict(params))
    frozen = lambda cond: jax.lax.stop_gradient(model(teacher_params, noisy, t, cond)).astype(jnp.float32)
    anchor = frozen(batch["anchor"]["cond"])
    target = anchor
    if guidance:
      target = anchor - guidance * (frozen(batch["cond"]) - anchor)
    student = model(params, noisy, t, batch["cond"]).astype(jnp.float32)
    channels = batch["x0"].shape[-1]
    per_example = jnp.mean((student[..., :channels] - target[..., :channels]) ** 2,
                           axis=tuple(range(1, student.ndim)))
    return jnp.mean(weight * per_example)

  return loss_fn


ESD = Objective("esd", data="concept", needs_teacher=True,
                make_loss=lambda model, noising, config: unlearning_loss(
                    model, noising, config.get("esd_guidance", 1.0)))
ABLATION = Objective("ablation", data="concept", needs_teacher=True,
                     make_loss=lambda model, noising, config: unlearning_loss(model, noising, 0.0))
