"""Training machinery shared by pretraining (Shapes) and localized fine-tuning.

Block selection is structural, not cosmetic: parameters are split into a trainable and a frozen
tree, gradients are taken w.r.t. the trainable tree only, and the optimizer state exists only for
it, so frozen blocks cost neither gradient nor optimizer memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from dit_jax.sharding import shard_params


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
  if not (np.isfinite(learning_rate) and learning_rate > 0):
    raise ValueError(f"learning_rate={learning_rate}: must be a positive finite number")
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
    self._executable = None   # memory()'s compiled step, reused so a run compiles once

  def __call__(self, state: TrainState, batch: dict):
    if self._executable is not None:
      try:
        return self._executable(state, self.frozen, self.aux, batch)
      except (TypeError, ValueError):   # other shapes or shardings than the planned step's
        self._executable = None
    return self._compiled(state, self.frozen, self.aux, batch)

  def memory(self, state: TrainState, batch: dict) -> dict[str, int]:
    """XLA's memory plan for one step, in bytes (compiles the step; runs nothing).

    arguments: weights (trainable and frozen), optimizer state, EMA, teacher and batch; temporaries:
    activations kept for the backward pass, gradients and the update (XLA packs them into one
    buffer of this size); outputs: the new state, less what reuses a donated argument's buffer;
    peak: what the device holds at once, arguments + temporaries + outputs not aliased to an
    argument. XLA's own heap-simulator peak (peak_memory_in_bytes, where a jaxlib reports it) can
    leave out buffers that live for the whole step, so it can fall below the temporaries alone;
    it is kept as xla_heap_peak. The same analysis on CPU and GPU, so a CPU run already shows what
    localized training saves.
    """
    executable = self._compiled.lower(state, self.frozen, self.aux, batch).compile()
    if not any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(state)):
      self._executable = executable
    stats = executable.memory_analysis()
    sizes = {"arguments": int(stats.argument_size_in_bytes), "temporaries": int(stats.temp_size_in_bytes),
             "outputs": int(stats.output_size_in_bytes)}
    plan = {**sizes, "peak": sum(sizes.values()) - int(stats.alias_size_in_bytes)}
    if getattr(stats, "peak_memory_in_bytes", None) is not None:
      plan["xla_heap_peak"] = int(stats.peak_memory_in_bytes)
    return plan


def fit(step_fn: Callable, state: TrainState, draw: Callable[[int], dict], steps: int, workdir: str,
        checkpoints: "Checkpoints", log_every: int = 25, checkpoint_every: int = 250,
        max_minutes: float = 0.0, desc: str = "train",
        callback: Callable[[int, TrainState], None] | None = None) -> TrainState:
  """The loop every task shares: progress bar, JSONL metrics + loss PNG, checkpoints, time limit.

  draw(step) -> batch. The loss is checked at every logged step and the whole state before every
  save, so a non-finite run raises NonFiniteLoss and the checkpoint on disk is the last good one.
  Ctrl-C saves the state (if finite), says how to resume and exits with status 130. A resumed run
  rewrites metrics.jsonl from the restored step on, and its clock continues the checkpoint's.
  callback(steps done, state) runs after each step (the trainer's validation images).
  """
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  start = int(state.step)
  began = time.time() - log.rewind(start)
  session = time.time()    # max_minutes limits this invocation, not the run's total
  bar = tqdm(range(start, steps), initial=start, total=steps, desc=desc)
  try:
    for step in bar:
      state, loss = step_fn(state, draw(step))
      out_of_time = max_minutes and time.time() - session > 60 * max_minutes
      save = (step + 1) % checkpoint_every == 0 or step + 1 == steps or out_of_time
      # Every checkpoint has its metrics record: a resumed run's clock starts from it.
      if save or (step + 1) % log_every == 0:
        loss = _checked_loss(loss, step + 1, checkpoints)
        log.write({"step": step + 1, "loss": loss, "seconds": time.time() - began})
        bar.set_postfix(loss=f"{loss:.4f}")
      if callback is not None:
        callback(step + 1, state)
      if save:
        checkpoints.save(state)
        log.plot(os.path.join(workdir, "loss.png"))
      if out_of_time:
        print(f"stopping after {max_minutes} minutes at step {step + 1}; rerun to resume")
        break
  except KeyboardInterrupt:
    bar.close()
    _stop_on_interrupt(state, start, checkpoints, workdir)
  return state


def _checked_loss(loss, step: int, checkpoints: "Checkpoints") -> float:
  loss = float(loss)
  if not np.isfinite(loss):
    raise NonFiniteLoss(f"loss became {loss} at step {step}; {checkpoints.last_good()}")
  return loss


def _stop_on_interrupt(state: TrainState, start: int, checkpoints: "Checkpoints", workdir: str):
  """Ctrl-C: keep what was trained (if finite), tell how to resume, exit non-zero."""
  saved, step = checkpoints.last_good(), _step_or_none(state)
  if step is not None and step > start and step != checkpoints.latest_step():
    try:
      checkpoints.save(state)
      saved = f"saved a checkpoint at step {step} in {checkpoints.directory}"
    except NonFiniteLoss as error:
      saved = str(error)
    except Exception as error:   # e.g. the interrupt landed inside orbax's own save of this step
      saved = f"could not save step {step} ({error}); {checkpoints.last_good()}"
  command = shlex.join([os.path.basename(sys.executable)] + sys.argv)
  print(f"\ninterrupted; {saved}.\nTo resume, rerun the same command with the same workdir "
        f"({workdir}):\n  {command}", flush=True)
  raise SystemExit(130)


def _step_or_none(state: TrainState) -> int | None:
  try:
    return int(state.step)
  except RuntimeError:   # interrupted inside the step, after it took (donated) the state's buffers
    return None


# ---------------------------------------------------------------------------------------------
# Checkpoints and metrics.


class Checkpoints:
  """orbax checkpoints of the TrainState under `directory`; keeps the last `keep`. Only finite
  states are written, and a non-finite one on disk is refused on restore."""

  def __init__(self, directory: str, keep: int = 2):
    import orbax.checkpoint as ocp
    self.directory = directory
    with quiet_absl():
      self.manager = ocp.CheckpointManager(os.path.abspath(directory),
                                           options=ocp.CheckpointManagerOptions(max_to_keep=keep))

  def save(self, state: TrainState) -> None:
    import orbax.checkpoint as ocp
    if not is_finite(state):
      raise NonFiniteLoss(f"the training state at step {int(state.step)} is not finite (NaN or inf) "
                          f"and was not saved; {self.last_good()}")
    with quiet_absl():
      self.manager.save(int(state.step), args=ocp.args.StandardSave(_as_tree(state)))
      self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def last_good(self) -> str:
    """Where a stopped run stands, for messages."""
    step = self.latest_step()
    if step is None:
      return f"no checkpoint has been saved yet in {self.directory}, so a rerun starts from step 0"
    return f"the last good checkpoint (step {step}) is in {self.directory}"

  def weights(self, step: int | None = None) -> tuple[int, dict, dict | None]:
    """(step, trainable, EMA or None) of a checkpoint, the latest by default, as flat param dicts,
    read without a template (no optimizer needed): for exporting a run that is still training."""
    import orbax.checkpoint as ocp
    step = self.manager.latest_step() if step is None else step
    if step is None or step not in self.manager.all_steps():
      raise FileNotFoundError(f"no checkpoint {'yet' if step is None else f'at step {step}'} in "
                              f"{self.directory} (it has steps {sorted(self.manager.all_steps())})")
    with quiet_absl():
      tree = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(self.directory),
                                                             str(step), "default"))
    arrays = lambda d: {k: jnp.asarray(v) for k, v in _unflat(d).items()}
    return step, arrays(tree["trainable"]), arrays(tree["ema"]) if tree.get("ema") else None

  def restore_latest(self, template: TrainState) -> TrainState | None:
    import orbax.checkpoint as ocp
    step = self.manager.latest_step()
    if step is None:
      return None
    with quiet_absl():
      tree = self.manager.restore(step, args=ocp.args.StandardRestore(_as_tree(template)))
    state = _from_tree(tree, template)
    if not is_finite(state):
      # Written before saves were checked: resuming would only train NaN further.
      raise NonFiniteLoss(f"the checkpoint at step {step} in {self.directory} is not finite (NaN or "
                          f"inf); delete {os.path.join(self.directory, str(step))} to resume from an "
                          "earlier one")
    return state


def is_finite(state: TrainState) -> bool:
  """Whether every float in the state (weights, optimizer moments, EMA) is finite."""
  leaves = [x for x in jax.tree_util.tree_leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return not leaves or bool(_all_finite(leaves))


@jax.jit
def _all_finite(leaves):
  # One compiled reduction: a host round trip per leaf would be slow for thousands of leaves.
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


@contextlib.contextmanager
def quiet_absl():
  """orbax logs each save at INFO (and some at WARNING) through absl; those lines would break the
  progress bar. Errors still show."""
  from absl import logging
  before = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(before)


def _as_tree(state: TrainState) -> dict:
  # orbax wants string keys: flat param paths become "a/b/c".
  flat = lambda d: None if d is None else {path_name(k): v for k, v in d.items()}
  return {"step": state.step, "trainable": flat(state.trainable), "opt_state": state.opt_state,
          "ema": flat(state.ema) or {}, "key": state.key}


def _from_tree(tree: dict, template: TrainState) -> TrainState:
  return TrainState(tree["step"], _unflat(tree["trainable"]), tree["opt_state"],
                    _unflat(tree["ema"]) if template.ema is not None else None, tree["key"])


def _unflat(d: dict) -> dict:
  """The inverse of _as_tree's flat names: "a/b/c" -> ("a", "b", "c")."""
  return {tuple(k.split("/")): v for k, v in d.items()}


class MetricsLog:
  """Appends one JSON line per record; plots the loss curve to PNG."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def rewind(self, step: int) -> float:
    """Drops the records after `step` (a resumed run redoes those steps); returns the seconds of
    the last record kept (0 when none), from which the resumed run's clock continues."""
    records = self.records()
    kept = [r for r in records if r.get("step", 0) <= step]
    if len(kept) < len(records):
      with open(self.path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
      os.replace(self.path + ".tmp", self.path)
    return float(kept[-1].get("seconds", 0.0)) if kept else 0.0

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


def shard_state(state: TrainState, mesh: Mesh) -> TrainState:
  replicated = NamedSharding(mesh, P())
  return TrainState(jax.device_put(state.step, replicated), shard_params(state.trainable, mesh),
                    shard_params(state.opt_state, mesh),
                    None if state.ema is None else shard_params(state.ema, mesh),
                    jax.device_put(state.key, replicated))
