"""What the entry points (localize.py, train.py, generate.py) share: config values they validate
the same way, and the plugins a config names."""
from __future__ import annotations

import importlib

import jax.numpy as jnp

from dit_jax import families
from dit_jax import loading

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def require_checkpoint(config) -> None:
  """Stop with a message saying where to get weights when config.checkpoint is empty, and with the
  valid choices when config.dtype is unknown."""
  if not config.get("checkpoint"):
    raise SystemExit(f"config.checkpoint is empty: pass --config.checkpoint=/path/to/weights. "
                     f"{families.get(config.model).published}")
  if config.dtype not in DTYPES:
    raise SystemExit(f"config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")


def import_plugins(config) -> None:
  """Import the modules config.plugins names, so the judges, knowledge sets and objectives they
  register can be named by the config (the Shapes world's: "dit_jax.shapes.plugin")."""
  for name in config.get("plugins", ()):
    try:
      importlib.import_module(name)
    except ImportError as error:
      raise SystemExit(f"config.plugins names {name!r}, which does not import: {error}")
