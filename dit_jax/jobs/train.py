"""Training jobs, looked up by config.task: run(config, workdir).

    python train.py --config configs/shapes_pretrain.py

A task is fn(config, workdir) registered with @register_task(name); the modules in config.plugins
are imported first, so a plugin's tasks (the Shapes world's, dit_jax/shapes/tasks.py) are found
the same way a user's would be.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from dit_jax import entry, provenance

TASKS: dict[str, Callable] = {}
WEIGHTS: dict[str, str] = {}   # task -> the config key naming the weights it starts from

# Config keys a run may change and still resume its workdir: how long it trains and how it logs
# (a resumed run may stretch its schedule, e.g. to more steps at a new learning rate).
RESUMABLE = ("steps", "learning_rate", "warmup_steps", "log_every", "checkpoint_every",
             "max_minutes", "workdir", "export_dir", "fresh", "plugins")
# What a run writes into its workdir, cleared by --config.fresh=True when the inputs changed.
OUTPUTS = ("checkpoints", "metrics.jsonl", "loss.png", "selection.json", "transformer", "lora",
           "data")


def register_task(name: str, weights: str | None = None):
  """Decorator: make fn(config, workdir) available as config.task = name. `weights`: the config key
  of the weights the task starts from (a fine-tuning run's base model), part of its inputs."""
  def register(fn):
    TASKS[name] = fn
    if weights:
      WEIGHTS[name] = weights
    return fn
  return register


def check_inputs(config, workdir: str) -> None:
  """A workdir holding another run (objective, blocks, LoRA rank, base weights, data, ...) is
  refused naming the difference, never resumed into (provenance.resume)."""
  keys = [k for k in config.keys() if k not in RESUMABLE]
  extra = {}
  if config.task in WEIGHTS:
    extra["weights"] = provenance.weights_fingerprint(config[WEIGHTS[config.task]])
  inputs = provenance.stage_inputs(config, keys, **extra)
  try:
    provenance.resume(workdir, {"run": inputs}, {"run": OUTPUTS}, config.get("fresh", False))
  except provenance.StaleResults as error:
    raise SystemExit(str(error).replace("out_dir", "workdir"))


def run(config, workdir: str) -> None:
  entry.import_plugins(config)
  if config.task not in TASKS:
    raise SystemExit(f"config.task={config.task!r}: choose one of {sorted(TASKS)} (a plugin's task "
                     "needs the plugin in config.plugins)")
  workdir = os.fspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  check_inputs(config, workdir)
  TASKS[config.task](config, workdir)
