"""Training machinery shared by pretraining (Shapes) and localized fine-tuning.

Block selection is structural, not cosmetic: parameters are split into a trainable and a frozen
tree, gradients are taken w.r.t. the trainable tree only, and the optimizer state exists only for
it, so frozen blocks cost neither gradient nor optimizer memory.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from tqdm import tqdm


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


def block_selector(blocks: list[int] | None, config=None,
                   parts: Sequence[str] = ()) -> Callable[[str], bool]:
  """Trainable test for the parameters of the listed blocks (None: every parameter). Block numbers
  follow config.block_names; without a config they name `transformer_blocks.<b>`. parts: only these
  sub-modules of each block (e.g. ("ff",), PixArt's feed-forward: weights the attention score does
  not read); empty: the whole block."""
  if blocks is None:
    return lambda name: True
  if config is None:
    prefixes = [f"transformer_blocks.{b}/" for b in blocks]
  else:
    names = config.block_names
    if bad := [b for b in blocks if not 0 <= b < len(names)]:
      raise ValueError(f"blocks {bad} do not exist: the model has {len(names)} (0..{len(names) - 1})")
    prefixes = [names[b] + "/" for b in blocks]
  if parts:
    prefixes = [prefix + part + "/" for prefix in prefixes for part in parts]
  return lambda name: name.startswith(tuple(prefixes))


# ---------------------------------------------------------------------------------------------
# The objective.


def diffusion_loss(apply: Callable, params, batch: dict, key, alphas_cumprod: jax.Array,
                   prediction_type: str = "epsilon"):
  """DDPM MSE at uniformly drawn timesteps, against the target the scheduler expects.

  prediction_type "epsilon" is PixArt's objective; "v_prediction" (v = sqrt(a) eps - sqrt(1-a) x0)
  keeps the implied x0 estimate well-conditioned at high noise, which small pixel-space models need:
  with epsilon, x0 = (x - sqrt(1-a) eps) / sqrt(a) multiplies the eps error by ~150 at t = 999.
  apply(params, noisy, t, batch) -> prediction with at least the image's channels (a learned-sigma
  model's extra channels are ignored).
  """
  if prediction_type not in ("epsilon", "v_prediction"):
    raise ValueError(f"prediction_type={prediction_type!r}: choose 'epsilon' or 'v_prediction'")
  x0 = batch["images"]
  noisy, t, noise = add_noise(x0, key, alphas_cumprod)
  a = alphas_cumprod[t.astype(jnp.int32)][:, None, None, None]
  target = noise if prediction_type == "epsilon" else jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0
  prediction = apply(params, noisy, t, batch)[..., :x0.shape[-1]]
  return jnp.mean((prediction.astype(jnp.float32) - target) ** 2)


def add_noise(x0, key, alphas_cumprod):
  """(x_t, t as float32, noise) at timesteps drawn uniformly per example: the forward process."""
  t_key, n_key = jax.random.split(key)
  t = jax.random.randint(t_key, (x0.shape[0],), 0, alphas_cumprod.shape[0])
  noise = jax.random.normal(n_key, x0.shape, jnp.float32)
  a = alphas_cumprod[t][:, None, None, None]
  return jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise, t.astype(jnp.float32), noise


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


def make_train_step(loss_fn: Callable, optimizer, frozen: dict, ema_decay: float = 0.0, aux=None,
                    combine: Callable = merge_params):
  """jit-compiled (state, batch) -> (state, loss).

  loss_fn(params_tree, batch, key, aux) -> scalar; combine(trainable, frozen) -> params_tree
  (merge_params, or lora.combiner's for LoRA factors). `frozen` and `aux` (e.g. a teacher's weights)
  are arguments of the compiled step, not constants baked into it, so large models compile quickly
  and their shardings carry over.
  """

  def step(state: TrainState, frozen: dict, aux, batch):
    key, step_key = jax.random.split(jax.random.wrap_key_data(state.key))
    loss, grads = jax.value_and_grad(
        lambda trainable: loss_fn(combine(trainable, frozen), batch, step_key, aux))(state.trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    ema = state.ema
    if ema is not None:
      # Warm-up: a fixed 0.999 would keep 37 % of the random init after 1000 steps.
      decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
      ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, trainable)
    return TrainState(state.step + 1, trainable, opt_state, ema, jax.random.key_data(key)), loss

  return TrainStep(jax.jit(step, donate_argnums=0), frozen, aux)


class TrainStep:
  """A compiled training step with its frozen weights and aux bound: step(state, batch) -> (state, loss)."""

  def __init__(self, compiled: Callable, frozen: dict, aux):
    self._compiled, self.frozen, self.aux = compiled, frozen, aux

  def __call__(self, state: TrainState, batch: dict):
    return self._compiled(state, self.frozen, self.aux, batch)

  def memory(self, state: TrainState, batch: dict) -> dict[str, int]:
    """XLA's memory plan for one step, in bytes (compiles the step; runs nothing).

    arguments: weights (trainable and frozen), optimizer state, EMA, teacher and batch; temporaries:
    activations kept for the backward pass, gradients and the update; peak: what the device must
    hold at once. The same analysis on CPU and GPU, so a CPU run already shows what localized
    training saves.
    """
    stats = self._compiled.lower(state, self.frozen, self.aux, batch).compile().memory_analysis()
    sizes = {"arguments": int(stats.argument_size_in_bytes), "temporaries": int(stats.temp_size_in_bytes),
             "outputs": int(stats.output_size_in_bytes)}
    # Older jaxlibs lack the peak field; donated (aliased) outputs reuse their argument's buffer.
    peak = getattr(stats, "peak_memory_in_bytes", None)
    if peak is None:
      peak = sum(sizes.values()) - int(stats.alias_size_in_bytes)
    return {**sizes, "peak": int(peak)}


def fit(step_fn: Callable, state: TrainState, draw: Callable[[int], dict], steps: int, workdir: str,
        checkpoints: "Checkpoints", log_every: int = 25, checkpoint_every: int = 250,
        max_minutes: float = 0.0, desc: str = "train") -> TrainState:
  """The loop every task shares: progress bar, JSONL metrics + loss PNG, checkpoints, time limit.

  draw(step) -> batch. A non-finite loss raises NonFiniteLoss before anything is saved, so the
  checkpoint on disk is the last good one.
  """
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  began = time.time()
  start = int(state.step)
  bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc)
  for step in bar:
    state, loss = step_fn(state, draw(step))
    if (step + 1) % log_every == 0 or step + 1 == steps:
      loss = float(loss)
      if not np.isfinite(loss):
        raise NonFiniteLoss(f"loss became {loss} at step {step + 1}; the last good checkpoint "
                            f"(step {checkpoints.latest_step()}) is in {checkpoints.directory}")
      log.write({"step": step + 1, "loss": loss, "seconds": time.time() - began})
      bar.set_postfix(loss=f"{loss:.4f}")
    out_of_time = max_minutes and time.time() - began > 60 * max_minutes
    if (step + 1) % checkpoint_every == 0 or step + 1 == steps or out_of_time:
      checkpoints.save(state)
      log.plot(os.path.join(workdir, "loss.png"))
    if out_of_time:
      print(f"stopping after {max_minutes} minutes at step {step + 1}; rerun to resume")
      break
  return state


# ---------------------------------------------------------------------------------------------
# Checkpoints and metrics.


class Checkpoints:
  """orbax checkpoints of the TrainState under `directory`; keeps the last `keep`."""

  def __init__(self, directory: str, keep: int = 2):
    import orbax.checkpoint as ocp
    self.directory = directory
    self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                         options=ocp.CheckpointManagerOptions(max_to_keep=keep))

  def save(self, state: TrainState) -> None:
    import orbax.checkpoint as ocp
    self.manager.save(int(state.step), args=ocp.args.StandardSave(_as_tree(state)))
    self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

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
