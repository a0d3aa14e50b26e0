"""Training: pretraining of the Shapes model (localized fine-tuning builds on the same loop).

    python train.py --config configs/shapes_pretrain.py

Resumes from the latest checkpoint in config.workdir; writes metrics.jsonl and loss.png there; a
non-finite loss stops the run with a message and leaves the last good checkpoint in place.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from dit_jax import schedulers, training
from dit_jax.models.pixart import PixArtConfig, PixArtTransformer
from dit_jax.shapes import model as shapes_model
from dit_jax.shapes.data import ShapesBatches
from ports import loading

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<job>.py", lock_config=True)


def pretrain_shapes(config) -> None:
  shapes_model.write_pipeline_index(config.pipeline_folder)
  module = PixArtTransformer(PixArtConfig(**config.transformer))
  data = ShapesBatches(config.pipeline_folder, config.num_images, config.seed, config.p_neutral,
                       config.p_empty, shapes_model.MAX_SEQUENCE_LENGTH,
                       cache_dir=os.path.join(config.workdir, "data"))
  rng = np.random.default_rng(config.seed)
  example = data.draw(rng, 2)
  params = module.init(jax.random.key(config.seed), example["images"], jnp.zeros((2,)),
                       example["caption"], example["caption_mask"])["params"]
  trainable, frozen = training.split_params(params, training.block_selector(None))
  optimizer = training.make_optimizer(config.learning_rate, config.warmup_steps, config.steps,
                                      config.weight_decay)
  state = training.init_state(trainable, optimizer, config.seed, ema=config.ema_decay > 0)
  checkpoints = training.Checkpoints(os.path.join(config.workdir, "checkpoints"))
  state = checkpoints.restore_latest(state) or state
  start = int(state.step)
  if start:
    print(f"resumed from step {start}")
  rng = np.random.default_rng([config.seed, start])   # a resumed run draws fresh, reproducible batches

  alphas = jnp.asarray(schedulers.training_alphas_cumprod(shapes_model.SCHEDULER_CONFIG))
  apply = lambda p, x, t, batch: module.apply({"params": p}, x, t, batch["caption"], batch["caption_mask"])
  loss_fn = lambda p, batch, key: training.eps_prediction_loss(apply, p, batch, key, alphas)
  step_fn = training.make_train_step(loss_fn, optimizer, frozen, config.ema_decay)
  log = training.MetricsLog(os.path.join(config.workdir, "metrics.jsonl"))

  began = time.time()
  bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="pretrain")
  for step in bar:
    state, loss = step_fn(state, data.draw(rng, config.batch_size))
    if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
      loss = float(loss)
      if not np.isfinite(loss):
        raise training.NonFiniteLoss(f"loss became {loss} at step {step + 1}; the last good "
                                     f"checkpoint is in {config.workdir}/checkpoints")
      log.write({"step": step + 1, "loss": loss, "seconds": time.time() - began})
      bar.set_postfix(loss=f"{loss:.4f}")
    out_of_time = config.max_minutes and time.time() - began > 60 * config.max_minutes
    if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps or out_of_time:
      checkpoints.save(state)
      log.plot(os.path.join(config.workdir, "loss.png"))
    if out_of_time:
      print(f"stopping after {config.max_minutes} minutes at step {step + 1}; rerun to resume")
      break

  weights = state.ema if state.ema is not None else state.trainable
  final = training.merge_params(jax.device_get(weights), frozen)
  loading.export_diffusers(config.export_dir, "pixart", module, final)
  print(f"exported step {int(state.step)} ({'EMA' if state.ema is not None else 'raw'} weights) "
        f"to {config.export_dir}")


TASKS = {"pretrain_shapes": pretrain_shapes}


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
