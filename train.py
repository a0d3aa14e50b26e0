"""Training: pretraining of the Shapes model, and localized fine-tuning on the same loop.

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json

Resumes from the latest checkpoint in config.workdir; writes metrics.jsonl and loss.png there; a
non-finite loss stops the run with a message and leaves the last good checkpoint in place.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from dit_jax import finetune, lora, schedulers, training
from dit_jax.models.pixart import PixArtConfig, PixArtTransformer
from dit_jax.pipeline import Text2Image, read_scheduler_config
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.data import (CaptionEncoder, ShapesBatches, personalization_batches,
                                 unlearning_batches)
from ports import loading

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<job>.py", lock_config=True)


def pretrain_shapes(config) -> None:
  shapes_model.write_pipeline_index(config.pipeline_folder)
  module = PixArtTransformer(PixArtConfig(**config.transformer))
  data = ShapesBatches(config.pipeline_folder, config.num_images, config.seed, config.p_neutral,
                       config.p_empty, shapes_model.MAX_SEQUENCE_LENGTH,
                       cache_dir=os.path.join(config.workdir, "data"))
  example = data.draw(np.random.default_rng(config.seed), 2)
  params = module.init(jax.random.key(config.seed), example["images"], jnp.zeros((2,)),
                       example["caption"], example["caption_mask"])["params"]
  trainable, frozen = training.split_params(params, training.block_selector(None))
  optimizer = training.make_optimizer(config.learning_rate, config.warmup_steps, config.steps,
                                      config.weight_decay)
  state, checkpoints = _start(config, trainable, optimizer, ema=config.ema_decay > 0)
  apply = lambda p, x, t, batch: module.apply({"params": p}, x, t, batch["caption"], batch["caption_mask"])
  alphas, prediction_type = _schedule(config.pipeline_folder)
  loss_fn = lambda p, batch, key, aux: training.diffusion_loss(apply, p, batch, key, alphas, prediction_type)
  step_fn = training.make_train_step(loss_fn, optimizer, frozen, config.ema_decay)
  state = _fit(config, step_fn, state, data, checkpoints, "pretrain")
  _export(config, module, state, frozen)


def finetune_shapes(config) -> None:
  """Personalization (a planted character) or unlearning (ESD / concept ablation) of the Shapes
  model, training only the selected blocks (config.blocks: "all", "3,7", or a scores.json): their
  full weights, or LoRA factors of their attention projections when config.lora_rank > 0."""
  module, params = loading.load(os.path.join(config.pipeline_folder, "transformer"), "pixart")
  blocks = finetune.select_blocks(config.blocks, len(training.block_names(module.config)), config.concept, config.k)
  trainable, frozen = training.split_params(params, training.block_selector(blocks, module.config))
  encode = CaptionEncoder(config.pipeline_folder, shapes_model.MAX_SEQUENCE_LENGTH)
  alphas, prediction_type = _schedule(config.pipeline_folder)
  apply = lambda p, x, t, caption, mask: module.apply({"params": p}, x, t, caption, mask)
  if config.objective == "personalization":
    pipe = Text2Image("pixart", config.pipeline_folder, num_steps=20, guidance_scale=4.5,
                      max_sequence_length=shapes_model.MAX_SEQUENCE_LENGTH)
    data = personalization_batches(encode, pipe, config.concept, config.num_images,
                                   config.num_prior_images, config.seed)
    loss_fn = finetune.personalization_loss(apply, alphas, prediction_type, config.prior_weight)
  elif config.objective in finetune.UNLEARNING:
    method = finetune.UNLEARNING[config.objective]
    data = unlearning_batches(encode, config.category, config.concept, method["anchor"],
                              config.num_images, config.seed)
    loss_fn = finetune.unlearning_loss(apply, alphas, method["guidance"])
  else:
    raise SystemExit(f"config.objective={config.objective!r}: choose 'personalization' or one of "
                     f"{sorted(finetune.UNLEARNING)}")
  combine = training.merge_params
  if config.lora_rank:
    frozen = {**trainable, **frozen}
    trainable = lora.init(frozen, training.block_selector(blocks, module.config), config.lora_rank, config.seed)
    combine = lora.combiner(config.lora_rank, config.lora_alpha)
  # The teacher (unlearning): the values fine-tuning changes, as they were before it.
  teacher = (lora.base_kernels(trainable, frozen) if config.lora_rank
             else jax.tree_util.tree_map(jnp.copy, trainable))
  optimizer = training.make_optimizer(config.learning_rate, config.warmup_steps, config.steps)
  state, checkpoints = _start(config, trainable, optimizer, ema=False)
  step_fn = training.make_train_step(loss_fn, optimizer, frozen, aux=teacher, combine=combine)
  count = lambda tree: int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))
  training.write_json(os.path.join(config.workdir, "selection.json"),
                      {"blocks": blocks if blocks is not None else "all",
                       "lora_rank": config.lora_rank, "trainable_parameters": count(trainable),
                       "total_parameters": count(params),
                       "step_memory_bytes": step_fn.memory(
                           state, data.draw(np.random.default_rng(0), config.batch_size))})
  state = _fit(config, step_fn, state, data, checkpoints, config.objective)
  _export(config, module, state, frozen, combine)
  if config.lora_rank:
    lora.export_peft(os.path.join(config.workdir, "lora"), jax.device_get(state.trainable),
                     config.lora_rank, config.lora_alpha)
    print(f"LoRA weights (diffusers/PEFT layout) in {config.workdir}/lora")


def _schedule(pipeline_folder: str):
  """Training alphas and prediction type from the pipeline's scheduler config."""
  scheduler_config = read_scheduler_config(pipeline_folder)
  return (jnp.asarray(schedulers.training_alphas_cumprod(scheduler_config)),
          scheduler_config.get("prediction_type", "epsilon"))


def _start(config, trainable, optimizer, ema: bool):
  state = training.init_state(trainable, optimizer, config.seed, ema=ema)
  checkpoints = training.Checkpoints(os.path.join(config.workdir, "checkpoints"))
  state = checkpoints.restore_latest(state) or state
  if int(state.step):
    print(f"resumed from step {int(state.step)}")
  return state, checkpoints


def _fit(config, step_fn, state, data, checkpoints, desc: str):
  # A resumed run draws fresh, reproducible batches.
  rng = np.random.default_rng([config.seed, int(state.step)])
  return training.fit(step_fn, state, lambda step: data.draw(rng, config.batch_size), config.steps,
                      config.workdir, checkpoints, config.log_every, config.checkpoint_every,
                      config.max_minutes, desc)


def _export(config, module, state, frozen, combine=training.merge_params) -> None:
  weights = state.ema if state.ema is not None else state.trainable
  final = jax.device_get(combine(weights, frozen))
  export_dir = config.export_dir or os.path.join(config.workdir, "transformer")
  loading.export_diffusers(export_dir, "pixart", module, final)
  print(f"exported step {int(state.step)} ({'EMA' if state.ema is not None else 'raw'} weights) "
        f"to {export_dir}")


TASKS = {"pretrain_shapes": pretrain_shapes, "finetune_shapes": finetune_shapes}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
  config = _CONFIG.value
  if config.task not in TASKS:
    raise SystemExit(f"config.task={config.task!r}: choose one of {sorted(TASKS)}")
  TASKS[config.task](config)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
