"""The Shapes model's training tasks, registered by name for train.py (config.task): pretraining
from scratch on rendered scenes, and localized fine-tuning (personalization of a planted character,
unlearning) with the objectives of dit_jax/objectives/.

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json

Both train through the shared loop (training.fit): resume from the latest checkpoint in the
workdir, metrics.jsonl and loss.png, a stop on a non-finite loss that keeps the last good checkpoint.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from dit_jax import files, finetune, loading, lora, objectives, schedulers, training
from dit_jax.jobs import train as train_job
from dit_jax.models.pixart import PixArtConfig, PixArtTransformer
from dit_jax.pipeline import Text2Image, read_scheduler_config
from dit_jax.shapes import ASSETS
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.data import (CaptionEncoder, ShapesBatches, personalization_batches,
                                 unlearning_batches)


@train_job.register_task("pretrain_shapes")
def pretrain_shapes(config, workdir: str) -> None:
  shapes_model.write_pipeline_index(config.pipeline_folder)
  module = PixArtTransformer(PixArtConfig(**config.transformer))
  data = ShapesBatches(config.pipeline_folder, config.num_images, config.seed, config.p_neutral,
                       config.p_empty, shapes_model.MAX_SEQUENCE_LENGTH,
                       cache_dir=os.path.join(workdir, "data"))
  example = data.draw(np.random.default_rng(config.seed), 2)
  params = module.init(jax.random.key(config.seed), example["images"], jnp.zeros((2,)),
                       example["caption"], example["caption_mask"])["params"]
  trainable, frozen = training.split_params(params, training.block_selector(None))
  optimizer = training.make_optimizer(config.learning_rate, config.warmup_steps, config.steps,
                                      config.weight_decay)
  state, checkpoints = _start(config, workdir, trainable, optimizer, ema=config.ema_decay > 0)
  apply = lambda p, x, t, batch: module.apply({"params": p}, x, t, batch["caption"], batch["caption_mask"])
  alphas, prediction_type = _schedule(config.pipeline_folder)
  loss_fn = lambda p, batch, key, aux: training.diffusion_loss(apply, p, batch, key, alphas, prediction_type)
  step_fn = training.make_train_step(loss_fn, optimizer, frozen, config.ema_decay)
  state = _fit(config, workdir, step_fn, state, data, checkpoints, "pretrain")
  _export(config, workdir, module, state, frozen)


@train_job.register_task("finetune_shapes")
def finetune_shapes(config, workdir: str) -> None:
  """Personalization (a planted character) or unlearning (ESD / concept ablation) of the Shapes
  model, training only the selected blocks (config.blocks: "all", "3,7", or a scores.json): their
  full weights, or LoRA factors of their attention projections when config.lora_rank > 0."""
  module, params = loading.load(os.path.join(config.pipeline_folder, "transformer"), "pixart")
  blocks = finetune.select_blocks(config.blocks, module.config.num_blocks, config.concept, config.k)
  parts = tuple(p for p in config.get("block_parts", "").split(",") if p)
  select = training.block_selector(blocks, module.config, parts)
  trainable, frozen = training.split_params(params, select)
  encode = CaptionEncoder(config.pipeline_folder, shapes_model.MAX_SEQUENCE_LENGTH)
  alphas, prediction_type = _schedule(config.pipeline_folder)
  apply = lambda p, x, t, caption, mask: module.apply({"params": p}, x, t, caption, mask)
  objective = objectives.get(config.objective)
  if objective.data == "subject":
    pipe = Text2Image("pixart", config.pipeline_folder, num_steps=20, guidance_scale=4.5,
                      max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH)
    data = personalization_batches(encode, pipe, config.concept, config.num_images,
                                   config.num_prior_images, config.seed)
  else:
    data = unlearning_batches(encode, config.category, config.concept, objective.anchor,
                              config.num_images, config.seed)
  loss_fn = objective.make_loss(apply, alphas, prediction_type, config)
  combine = training.merge_params
  if config.lora_rank:
    frozen = {**trainable, **frozen}
    trainable = lora.init(frozen, select, config.lora_rank, config.seed)
    combine = lora.combiner(config.lora_rank, config.lora_alpha)
  # The teacher (unlearning): the values fine-tuning changes, as they were before it.
  teacher = (lora.base_kernels(trainable, frozen) if config.lora_rank
             else jax.tree_util.tree_map(jnp.copy, trainable))
  optimizer = training.make_optimizer(config.learning_rate, config.warmup_steps, config.steps)
  state, checkpoints = _start(config, workdir, trainable, optimizer, ema=False)
  step_fn = training.make_train_step(loss_fn, optimizer, frozen, aux=teacher, combine=combine)
  count = lambda tree: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))
  files.write_json(os.path.join(workdir, "selection.json"),
                      {"blocks": blocks if blocks is not None else "all", "parts": list(parts),
                       "lora_rank": config.lora_rank, "trainable_parameters": count(trainable),
                       "total_parameters": count(params),
                       "step_memory_bytes": step_fn.memory(
                           state, data.draw(np.random.default_rng(0), config.batch_size))})
  state = _fit(config, workdir, step_fn, state, data, checkpoints, config.objective)
  _export(config, workdir, module, state, frozen, combine)
  if config.lora_rank:
    lora.export_peft(os.path.join(workdir, "lora"), jax.device_get(state.trainable),
                     config.lora_rank, config.lora_alpha)
    print(f"LoRA weights (diffusers/PEFT layout) in {workdir}/lora")


def _schedule(pipeline_folder: str):
  """Training alphas and prediction type from the pipeline's scheduler config."""
  scheduler_config = read_scheduler_config(pipeline_folder)
  return (jnp.asarray(schedulers.training_alphas_cumprod(scheduler_config)),
          scheduler_config.get("prediction_type", "epsilon"))


def _start(config, workdir, trainable, optimizer, ema: bool):
  state = training.init_state(trainable, optimizer, config.seed, ema=ema)
  checkpoints = training.Checkpoints(os.path.join(workdir, "checkpoints"))
  state = checkpoints.restore_latest(state) or state
  if int(state.step):
    print(f"resumed from step {int(state.step)}")
  return state, checkpoints


def _fit(config, workdir, step_fn, state, data, checkpoints, desc: str):
  # A resumed run draws fresh, reproducible batches.
  rng = np.random.default_rng([config.seed, int(state.step)])
  return training.fit(step_fn, state, lambda step: data.draw(rng, config.batch_size), config.steps,
                      workdir, checkpoints, config.log_every, config.checkpoint_every,
                      config.max_minutes, desc)


def _export(config, workdir, module, state, frozen, combine=training.merge_params) -> None:
  weights = state.ema if state.ema is not None else state.trainable
  final = jax.device_get(combine(weights, frozen))
  export_dir = config.export_dir or os.path.join(workdir, "transformer")
  loading.export_diffusers(export_dir, "pixart", module, final)
  print(f"exported step {int(state.step)} ({'EMA' if state.ema is not None else 'raw'} weights) "
        f"to {export_dir}")


def finetune_config(objective: str, concept: str, workdir: str) -> ml_collections.ConfigDict:
  """Shared defaults of localized fine-tuning on the Shapes model (configs/shapes_*.py)."""
  config = ml_collections.ConfigDict()
  config.task = "finetune_shapes"
  config.plugins = ("dit_jax.shapes.plugin",)
  config.objective = objective
  config.pipeline_folder = str(ASSETS)
  config.concept = concept
  # Which blocks train: "all", an explicit list ("2,5,9"), or a localize.py scores.json, from which
  # the top-k blocks of `concept` are taken.
  config.blocks = "all"
  config.k = 4
  # Only these sub-modules of the selected blocks train ("ff": PixArt's feed-forward); "": all of them.
  config.block_parts = ""
  config.lora_rank = 0               # > 0: LoRA of this rank on the selected blocks' attention
  config.lora_alpha = 8.0
  config.workdir = workdir
  config.export_dir = ""             # "": <workdir>/transformer
  config.steps = 300
  config.batch_size = 16
  config.learning_rate = 3e-4
  config.warmup_steps = 20
  config.seed = 0
  config.log_every = 10
  config.checkpoint_every = 100
  config.max_minutes = 0.0
  return config


def personalize_config() -> ml_collections.ConfigDict:
  """configs/shapes_personalize.py: plant the character "quib" (DreamBooth + prior preservation)."""
  config = finetune_config("personalization", concept="quib", workdir="runs/personalize_quib")
  config.num_images = 8            # renders of the subject
  config.num_prior_images = 64     # the frozen model's own "a character ..." images
  config.prior_weight = 1.0
  return config


def unlearn_config() -> ml_collections.ConfigDict:
  """configs/shapes_unlearn.py: unlearn the character "zork" (concept ablation; objective=esd)."""
  config = finetune_config("ablation", concept="zork", workdir="runs/unlearn_zork")
  config.category = "character"
  config.num_images = 64           # renders of scenes that name the concept
  return config


def run_finetune(config: ml_collections.ConfigDict, workdir: str, blocks: str, steps: int,
                 **overrides) -> None:
  """A fine-tuning run of `config` in this process, with the given blocks, steps and overrides."""
  config = config.copy_and_resolve_references()
  config.update(dict(blocks=blocks, steps=steps, **overrides))
  train_job.run(config, workdir)
