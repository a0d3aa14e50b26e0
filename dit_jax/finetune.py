"""Localized fine-tuning: which blocks train, and the personalization and unlearning objectives.

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
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from dit_jax import training
from dit_jax.localization import rank_blocks

UNLEARNING = {"esd": dict(anchor="neutral", guidance=1.0),
              "ablation": dict(anchor="neutral", guidance=0.0)}


# ---------------------------------------------------------------------------------------------
# Which blocks.


def select_blocks(spec: str | Sequence[int], num_blocks: int, concept: str = "", k: int = 0,
                  variant: str = "score_wo") -> list[int] | None:
  """The blocks to train: None for "all"; an explicit list ("3,7,9" or a sequence of ints); or the
  top-k blocks of `concept` from a localization run's scores.json (a path ending in .json)."""
  if isinstance(spec, str) and spec.strip() == "all":
    return None
  if isinstance(spec, str) and spec.endswith(".json"):
    blocks = top_blocks_from_scores(spec, concept, k, variant)
  else:
    try:
      blocks = sorted({int(b) for b in (spec.split(",") if isinstance(spec, str) else spec)})
    except ValueError:
      raise ValueError(f"blocks={spec!r}: use 'all', a list like '3,7,9', or a scores.json path")
  bad = [b for b in blocks if not 0 <= b < num_blocks]
  if bad or not blocks:
    raise ValueError(f"blocks {bad or blocks} are not a non-empty subset of 0..{num_blocks - 1}")
  return blocks


def top_blocks_from_scores(path: str, concept: str, k: int, variant: str = "score_wo") -> list[int]:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no localization scores; run localize.py first")
  with open(path) as f:
    scores = json.load(f)
  if concept not in scores:
    raise KeyError(f"{path} has no scores for {concept!r}; it has {sorted(scores)}")
  if k <= 0:
    raise ValueError(f"k={k}: taking the top-k blocks from {path} needs k >= 1")
  return sorted(int(b) for b in rank_blocks(np.asarray(scores[concept][variant]))[:k])


# ---------------------------------------------------------------------------------------------
# Objectives.


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
