"""What the entry points (localize.py, train.py) share: reading a config and loading its backbone."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ports import loading

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def load_backbone(config):
  """(Flax module, params) of config.model from config.checkpoint, with errors a user can act on."""
  if not config.get("checkpoint"):
    fam = loading.family(config.model)
    raise SystemExit(f"config.checkpoint is empty: pass --config.checkpoint=/path/to/weights. "
                     f"{fam.published}")
  if config.dtype not in DTYPES:
    raise SystemExit(f"config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
  overrides = dict(config.get("original_overrides", {}))
  return loading.load(config.checkpoint, config.model, DTYPES[config.dtype], **overrides)


def describe(module, params) -> str:
  count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  return f"{type(module).__name__}: {count / 1e6:,.1f}M parameters, config {module.config}"
