"""Training jobs, looked up by config.task: run(config, workdir).

    python train.py --config configs/shapes_pretrain.py

A task is fn(config, workdir) registered with @register_task(name); the modules in config.plugins
are imported first, so a plugin's tasks (the Shapes world's, dit_jax/shapes/tasks.py) are found
the same way a user's would be.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from dit_jax import entry

TASKS: dict[str, Callable] = {}


def register_task(name: str):
  """Decorator: make fn(config, workdir) available as config.task = name."""
  def register(fn):
    TASKS[name] = fn
    return fn
  return register


def run(config, workdir: str) -> None:
  entry.import_plugins(config)
  if config.task not in TASKS:
    raise SystemExit(f"config.task={config.task!r}: choose one of {sorted(TASKS)} (a plugin's task "
                     "needs the plugin in config.plugins)")
  TASKS[config.task](config, os.fspath(workdir))
