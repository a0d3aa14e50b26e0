"""Training machinery shared by pretraining (Shapes) and localized fine-tuning.

Block selection is structural, not cosmetic: parameters are split into a trainable and a frozen
tree, gradients are taken w.r.t. the trainable tree only, and the optimizer state exists only for
it, so frozen blocks cost neither gradient nor optimizer memory.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util


# ---------------------------------------------------------------------------------------------
# Which parameters train.


def path_name(path: tuple[str, ...]) -> str:
  return "/".join(path)


def split_params(params, trainable: Callable[[str], bool]):
  """(trainable, frozen) flat dicts {path tuple: array} of a params tree."""
  flat = traverse_util.flatten_dict(params)
  train = {k: v for k, v in flat.items() if trainable(path_name(k))}
  if not train:
    raise ValueError("the selection leaves no parameter to train")
  return train, {k: v for k, v in flat.items() if k not in train}


def merge_params(trainable: dict, frozen: dict):
  return traverse_util.unflatten_dict({**frozen, **trainable})


def block_selector(blocks: list[int] | None, prefix: str = "transformer_blocks") -> Callable[[str], bool]:
  """Trainable test for the parameters of the listed blocks (None: every parameter)."""
  if blocks is None:
    return lambda name: True
  pattern = re.compile(rf"^{re.escape(prefix)}\.({'|'.join(str(b) for b in blocks)})/")
  return lambda name: bool(pattern.match(name))


# ---------------------------------------------------------------------------------------------
# The objective.


def eps_prediction_loss(apply: Callable, params, batch: dict, key, alphas_cumprod: jax.Array):
  """DDPM noise-prediction MSE at uniformly drawn timesteps (PixArt's training objective).

  apply(params, noisy, t, batch) -> prediction with at least the image's channels (a learned-sigma
  model's extra channels are ignored).
  """
  x0 = batch["images"]
  t_key, n_key = jax.random.split(key)
  t = jax.random.randint(t_key, (x0.shape[0],), 0, alphas_cumprod.shape[0])
  noise = jax.random.normal(n_key, x0.shape, jnp.float32)
  a = alphas_cumprod[t][:, None, None, None]
  noisy = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
  prediction = apply(params, noisy, t.astype(jnp.float32), batch)[..., :x0.shape[-1]]
  return jnp.mean((prediction.astype(jnp.float32) - noise) ** 2)


# ---------------------------------------------------------------------------------------------
# State and step.


class TrainState(NamedTuple):
  step: jax.Array
  trainable: dict          # flat {path: array}
  opt_state: Any
  ema: dict | None         # EMA of the trainable params, or None
  key: jax.Array


def make_optimizer(learning_rate: float, warmup_steps: int, total_steps: int, weight_decay: float = 0.0,
                   grad_clip: float = 1.0) -> optax.GradientTransformation:
  schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(warmup_steps, 1),
                                                max(total_steps, warmup_steps + 1), learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(grad_clip),
                     optax.adamw(schedule, weight_decay=weight_decay))


def init_state(trainable: dict, optimizer, seed: int, ema: bool) -> TrainState:
  return TrainState(jnp.zeros((), jnp.int32), trainable, optimizer.init(trainable),
                    jax.tree_util.tree_map(jnp.copy, trainable) if ema else None,
                    jax.random.key_data(jax.random.key(seed)))


def make_train_step(loss_fn: Callable, optimizer, frozen: dict, ema_decay: float = 0.0):
  """jit-compiled (state, batch) -> (state, loss). loss_fn(params_tree, batch, key) -> scalar."""

  def step(state: TrainState, batch):
    key, step_key = jax.random.split(jax.random.wrap_key_data(state.key))
    loss, grads = jax.value_and_grad(
        lambda trainable: loss_fn(merge_params(trainable, frozen), batch, step_key))(state.trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    ema = state.ema
    if ema is not None:
      # Warm-up: a fixed 0.999 would keep 37 % of the random init after 1000 steps.
      decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
      ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, trainable)
    return TrainState(state.step + 1, trainable, opt_state, ema, jax.random.key_data(key)), loss

  return jax.jit(step, donate_argnums=0)


# ---------------------------------------------------------------------------------------------
# Checkpoints and metrics.


class Checkpoints:
  """orbax checkpoints of the TrainState under `directory`; keeps the last `keep`."""

  def __init__(self, directory: str, keep: int = 2):
    import orbax.checkpoint as ocp
    self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                         options=ocp.CheckpointManagerOptions(max_to_keep=keep))

  def save(self, state: TrainState) -> None:
    import orbax.checkpoint as ocp
    self.manager.save(int(state.step), args=ocp.args.StandardSave(_as_tree(state)))
    self.manager.wait_until_finished()

  def restore_latest(self, template: TrainState) -> TrainState | None:
    import orbax.checkpoint as ocp
    step = self.manager.latest_step()
    if step is None:
      return None
    tree = self.manager.restore(step, args=ocp.args.StandardRestore(_as_tree(template)))
    return _from_tree(tree, template)


def _as_tree(state: TrainState) -> dict:
  # orbax wants string keys: flat param paths become "a/b/c".
  flat = lambda d: None if d is None else {path_name(k): v for k, v in d.items()}
  return {"step": state.step, "trainable": flat(state.trainable), "opt_state": state.opt_state,
          "ema": flat(state.ema) or {}, "key": state.key}


def _from_tree(tree: dict, template: TrainState) -> TrainState:
  unflat = lambda d: {tuple(k.split("/")): v for k, v in d.items()}
  return TrainState(tree["step"], unflat(tree["trainable"]), tree["opt_state"],
                    unflat(tree["ema"]) if template.ema is not None else None, tree["key"])


class MetricsLog:
  """Appends one JSON line per record; plots the loss curve to PNG."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def records(self) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def plot(self, png_path: str, key: str = "loss") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in self.records() if key in r]
    if not rows:
      return
    steps, values = np.array([r["step"] for r in rows]), np.array([r[key] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values, lw=0.8, alpha=0.4, label=key)
    if len(values) >= 20:
      window = max(len(values) // 30, 5)
      smooth = np.convolve(values, np.ones(window) / window, mode="valid")
      ax.plot(steps[window - 1:], smooth, lw=1.6, label=f"{key} (moving mean)")
    ax.set_xlabel("step"), ax.set_ylabel(key), ax.set_yscale("log"), ax.legend(), ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


class NonFiniteLoss(RuntimeError):
  pass
