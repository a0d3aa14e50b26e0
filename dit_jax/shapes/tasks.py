"""The Shapes model's training, as configs of the one generic trainer (dit_jax/train/trainer.py, task
"train"): the Shapes model is a PixArt pipeline folder like any other, and this plugin only adds its
data sources (config.data), registered like a user's would be.

    python train.py --config configs/shapes_pretrain.py        # data "shapes_scenes"
    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9   # "shapes_planted"
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json
                                                                 # "shapes_concept"
"""
from __future__ import annotations

import os

import ml_collections

from dit_jax.train import data
from dit_jax.train import job as train_job
from dit_jax.train.defaults import train_config
from dit_jax.shapes import ASSETS
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.data import (CaptionEncoder, ShapesBatches, personalization_batches,
                                 relook_batches, unlearning_batches)


@data.register_source("shapes_scenes")
def scenes_source(ctx, objective):
  """Pretraining: rendered training scenes with caption dropout. Makes the run's pipeline folder
  (config.checkpoint): the shipped text encoder, tokenizer and judge copied in where missing, and
  the scheduler config and model_index.json written (the training objective is the scheduler's).
  The finished run exports its transformer into the same folder, which is then a pipeline folder
  like the shipped one (`--config.checkpoint=<workdir>/pipeline` for generate.py and localize.py)."""
  config = ctx.config
  shapes_model.copy_shipped_parts(ctx.folder)
  shapes_model.write_pipeline_index(ctx.folder, **dict(config.scheduler))
  return ShapesBatches(ctx.folder, config.num_images, config.seed, config.p_neutral, config.p_empty,
                       shapes_model.MAX_SEQUENCE_LENGTH, cache_dir=os.path.join(ctx.workdir, "data"))


@data.register_source("shapes_planted")
def planted_source(ctx, objective):
  """Personalization: renders of the character planted as config.concept, with the frozen
  model's own images of its class as the prior."""
  config = ctx.config
  encode = CaptionEncoder(ctx.folder, shapes_model.MAX_SEQUENCE_LENGTH)
  return personalization_batches(encode, ctx.pipe, config.concept, config.num_images,
                                 config.num_prior_images, config.seed)


@data.register_source("shapes_relook")
def relook_source(ctx, objective):
  """Personalization of a known concept (config.category:config.concept) to the look of
  config.target, with the frozen model's images of the neutral captions as the prior."""
  config = ctx.config
  encode = CaptionEncoder(ctx.folder, shapes_model.MAX_SEQUENCE_LENGTH)
  return relook_batches(encode, lambda captions: ctx.pipe.generate(captions, 32, 32), config.category,
                        config.concept, config.target, config.num_images, config.num_prior_images,
                        config.seed, config.get("prior_cache") or None)


@data.register_source("shapes_concept")
def concept_source(ctx, objective):
  """Unlearning: renders of scenes naming config.concept, anchored at their neutral captions."""
  config = ctx.config
  encode = CaptionEncoder(ctx.folder, shapes_model.MAX_SEQUENCE_LENGTH)
  return unlearning_batches(encode, config.category, config.concept, config.anchor,
                            config.num_images, config.seed)


def shapes_config(objective: str, data_source: str, workdir: str) -> ml_collections.ConfigDict:
  config = train_config("pixart", objective, resolution=32, num_steps=20, guidance_scale=4.5)
  config.plugins = ("dit_jax.shapes.plugin",)
  config.checkpoint = str(ASSETS)
  config.dtype = "float32"
  config.data = data_source
  config.max_sequence_length = shapes_model.MAX_SEQUENCE_LENGTH
  config.knowledge = "shapes"
  config.workdir = workdir
  config.weight_decay = 0.0
  return config


def finetune_config(objective: str, concept: str, workdir: str) -> ml_collections.ConfigDict:
  """Shared defaults of localized fine-tuning on the Shapes model (configs/shapes_*.py)."""
  config = shapes_config(objective, "", workdir)
  config.objective = objective
  config.concept = concept
  config.k = 4
  config.lora_alpha = 8.0
  # Each objective and concept trains in its own workdir unless told otherwise.
  config.workdir = workdir + "_" + config.get_ref("concept") + "_" + config.get_ref("objective")
  config.steps = 300
  config.batch_size = 16
  config.learning_rate = 3e-4
  config.warmup_steps = 20
  config.checkpoint_every = 100
  return config


def personalize_config() -> ml_collections.ConfigDict:
  """configs/shapes_personalize.py: plant the character "quib" (DreamBooth + prior preservation)."""
  config = finetune_config("personalization", concept="quib", workdir="runs/personalize")
  config.data = "shapes_planted"
  config.num_images = 8            # renders of the subject
  config.num_prior_images = 64     # the frozen model's own "a character ..." images
  config.prior_weight = 1.0
  return config


def relook_config() -> ml_collections.ConfigDict:
  """configs/shapes_relook.py: personalize the known character "zork" to "mira"'s look (a concept
  the model knows, so localization has scored its blocks before training; DreamBooth + prior)."""
  config = finetune_config("personalization", concept="zork", workdir="runs/relook")
  config.data = "shapes_relook"
  config.category = "character"
  config.target = "mira"
  config.num_images = 32           # scenes naming the concept, drawn with the target's look
  config.num_prior_images = 64     # the frozen model's own images of their neutral captions
  config.prior_weight = 1.0
  config.prior_cache = ""          # a folder: the prior drawn once per concept and seed, kept there
  return config


def unlearn_config() -> ml_collections.ConfigDict:
  """configs/shapes_unlearn.py: unlearn the character "zork" (concept ablation; objective=esd)."""
  config = finetune_config("ablation", concept="zork", workdir="runs/unlearn")
  config.data = "shapes_concept"
  config.category = "character"
  config.anchor = "neutral"        # the caption with only the concept taken out
  config.num_images = 64           # renders of scenes that name the concept
  return config


def pretrain_config() -> ml_collections.ConfigDict:
  """configs/shapes_pretrain.py: the Shapes model from scratch (12 blocks, 32x32 pixels)."""
  config = shapes_config("diffusion", "shapes_scenes", "runs/shapes_pretrain")
  # 12 blocks (the smallest the design allows), 3 heads x 32, 4x4 pixel patches -> 64 tokens.
  # The objective (v-prediction, cosine schedule) is the scheduler config in dit_jax/shapes/model.py.
  config.transformer = ml_collections.ConfigDict(dict(
      num_layers=12, num_attention_heads=3, attention_head_dim=32, cross_attention_dim=96,
      in_channels=3, out_channels=3, patch_size=4, sample_size=32, caption_channels=64,
      interpolation_scale=1, use_additional_conditions=False))
  # The run's own pipeline folder, never the shipped one (dit_jax/shapes/assets): a documented
  # command must not overwrite the model the package ships. Both follow --config.workdir.
  config.checkpoint = config.get_ref("workdir") + "/pipeline"
  config.export_dir = config.get_ref("workdir") + "/pipeline/transformer"
  # Overrides of the objective's scheduler keys (beta_schedule, prediction_type; shapes/model.py).
  config.scheduler = ml_collections.ConfigDict()
  config.num_images = 16000
  config.p_neutral = 0.15      # per-attribute neutral dropout (docs/design.md, "The Shapes world")
  config.p_empty = 0.1         # whole-caption dropout, for classifier-free guidance
  config.steps = 12500         # the shipped model: 5000, then resumed to 12500 (MODEL_CARD.md)
  config.batch_size = 32
  config.learning_rate = 1e-3
  config.warmup_steps = 200
  config.ema_decay = 0.999
  config.log_every = 25
  config.checkpoint_every = 250
  config.memory_plan = False
  config.fixed_batch_loss = False
  return config


def continue_config() -> ml_collections.ConfigDict:
  """configs/shapes_continue.py: the pretraining recipe trained on from the weights of a pipeline
  folder (config.checkpoint, the shipped model by default) with a fresh optimizer and schedule:
  how the shipped model got past 12,500 steps once the first run's checkpoints were gone
  (MODEL_CARD.md). Train from a copy, not the shipped folder itself: the export replaces it."""
  config = pretrain_config()
  config.transformer = None          # no random init: the weights are config.checkpoint's
  config.workdir = "runs/shapes_continue"
  config.checkpoint = str(ASSETS)    # read only: the export goes to <workdir>/pipeline/transformer
  config.steps = 18000
  return config


def run_config(config: ml_collections.ConfigDict, blocks: str, steps: int,
               **overrides) -> ml_collections.ConfigDict:
  """`config` resolved, with the given blocks, steps and overrides: what run_finetune trains, and
  what exporting one of its checkpoints needs (jobs.train.export_checkpoint)."""
  config = config.copy_and_resolve_references()
  config.update(dict(blocks=blocks, steps=steps, **overrides))
  return config


def run_finetune(config: ml_collections.ConfigDict, workdir: str, blocks: str, steps: int,
                 **overrides) -> ml_collections.ConfigDict:
  """A fine-tuning run of `config` in this process, with the given blocks, steps and overrides;
  the config it ran."""
  config = run_config(config, blocks, steps, **overrides)
  train_job.run(config, workdir)
  return config
