"""The Shapes model as a PixArt pipeline folder (dit_jax/shapes/assets/), loadable by diffusers and by us.

    assets/model_index.json          PixArtAlphaPipeline, no VAE (the model works on pixels)
                  transformer/       PixArtTransformer2DModel, diffusers format
                  scheduler/         DPMSolverMultistepScheduler (the schedule training used)
                  tokenizer/, text_encoder/   (dit_jax.shapes.text)
                  judge/             (dit_jax.shapes.classifier)
"""
from __future__ import annotations

import json
import os

import diffusers

import shutil

from dit_jax import files
from dit_jax.shapes import ASSETS, text

# Training draws timesteps from this schedule; sampling uses DPM-Solver++ on it. Not PixArt's linear
# schedule with epsilon: a 1.5M-parameter pixel model cannot predict eps precisely enough at high
# noise for the implied x0 (error x ~150 at t=999). The cosine schedule (made for 32px pixels) with
# v-prediction keeps every step's x0 estimate bounded.
SCHEDULER_CONFIG = {"_class_name": "DPMSolverMultistepScheduler", "num_train_timesteps": 1000,
                    "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction",
                    "algorithm_type": "dpmsolver++", "solver_order": 2, "lower_order_final": True, "timestep_spacing": "linspace"}
MAX_SEQUENCE_LENGTH = text.MAX_LENGTH


def write_pipeline_index(folder: str, **scheduler) -> None:
  """model_index.json and scheduler/ so diffusers' PixArtAlphaPipeline.from_pretrained reads the
  folder; `scheduler` overrides SCHEDULER_CONFIG's keys (beta_schedule, prediction_type)."""
  unknown = set(scheduler) - set(SCHEDULER_CONFIG)
  if unknown:
    raise ValueError(f"unknown scheduler keys {sorted(unknown)}; known: {sorted(SCHEDULER_CONFIG)}")
  _write_if_changed(os.path.join(folder, "scheduler", "scheduler_config.json"),
                    {**SCHEDULER_CONFIG, **scheduler, "_diffusers_version": diffusers.__version__})
  index = {"_class_name": "PixArtAlphaPipeline", "_diffusers_version": diffusers.__version__,
           "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
           "text_encoder": ["transformers", "T5EncoderModel"],
           "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
           "transformer": ["diffusers", "PixArtTransformer2DModel"], "vae": [None, None]}
  _write_if_changed(os.path.join(folder, "model_index.json"), index)


# What a pipeline folder of the Shapes model takes from the shipped one besides its transformer;
# the text encoder last: a folder that has one is complete (or the user's own).
SHIPPED_PARTS = ("judge", "tokenizer", "text_encoder")


def copy_shipped_parts(folder: str) -> None:
  """The shipped judge, tokenizer and text encoder copied into a new pipeline folder: a training
  run's own, so that nothing it writes lands in the shipped one. A folder that already has a text
  encoder is left as it is: adding to it would change its fingerprint, and a resumed run trained
  from it would be refused as another run's."""
  if os.path.exists(os.path.join(folder, "text_encoder")):
    return
  for part in SHIPPED_PARTS:
    if not os.path.exists(os.path.join(folder, part)):
      shutil.copytree(ASSETS / part, os.path.join(folder, part))


def _write_if_changed(path: str, obj: dict) -> None:
  """Rewriting an unchanged file would change its time, and with it the fingerprint of the folder
  (provenance.weights_fingerprint): a run training on from this folder could not resume. A changed
  file inside the shipped model's folder is refused: a training run writes into its own folder."""
  text = json.dumps(obj, indent=2)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return
  if os.path.abspath(path).startswith(str(ASSETS) + os.sep):
    raise ValueError(f"this run would rewrite {path}, a file of the shipped Shapes model; train "
                     "from a copy (cp -r dit_jax/shapes/assets <folder>; --config.checkpoint=<folder>)")
  files.write_text(path, text)
