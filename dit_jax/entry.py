"""What the entry points (localize.py, generate.py) share: config values they validate the same way."""
from __future__ import annotations

import jax.numpy as jnp

from ports import loading

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def require_checkpoint(config) -> None:
  """Stop with a message saying where to get weights when config.checkpoint is empty, and with the
  valid choices when config.dtype is unknown."""
  if not config.get("checkpoint"):
    raise SystemExit(f"config.checkpoint is empty: pass --config.checkpoint=/path/to/weights. "
                     f"{loading.family(config.model).published}")
  if config.dtype not in DTYPES:
    raise SystemExit(f"config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
