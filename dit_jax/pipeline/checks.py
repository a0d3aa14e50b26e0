"""What the entry points (localize.py, train.py, generate.py) share: how they start and report a user
error (run_cli: a few lines naming the fix, no traceback), config checks they run before any work,
the same way (so an empty or impossible input is named at once instead of surfacing as an
IndexError after minutes of scoring, or as a run that silently does nothing), and the plugins a
config names."""
from __future__ import annotations

import importlib
import json
import os

import jax.numpy as jnp

from dit_jax import cli, families, provenance
from dit_jax.pipeline import hub

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def require_checkpoint(config) -> None:
  """Stop with a message saying where to get weights when config.checkpoint is empty, and with the
  valid choices when config.dtype is unknown; then resolve a Hub id (resolve_checkpoint)."""
  if not config.get("checkpoint"):
    raise SystemExit(f"config.checkpoint is empty: pass --config.checkpoint=/path/to/weights or a "
                     f"Hub id (owner/name). {families.get(config.model).published}")
  if config.dtype not in DTYPES:
    raise SystemExit(f"config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
  resolve_checkpoint(config)
  require_weights(config, config.checkpoint)


def resolve_checkpoint(config) -> None:
  """Replace a Hub id in config.checkpoint ("PixArt-alpha/PixArt-XL-2-512x512", at config.revision)
  by its local snapshot folder (dit_jax/pipeline/hub.py), once and before anything reads it: the loaders and
  the weights fingerprint of a run's provenance then see a path, and the path's commit records which
  version ran. A local path is kept. Every job that takes a checkpoint needs the VAE: localize.py's
  judge sees decoded images, train.py encodes its images and samples, generate.py decodes."""
  if not config.get("checkpoint"):
    return
  try:
    config.checkpoint = hub.resolve_pipeline(config.checkpoint, config.model,
                                             config.get("revision") or None)
  except hub.HubError as error:
    raise SystemExit(f"config.checkpoint: {error}")


def require_weights(config, path: str | None) -> None:
  """The weights a job reads exist: a path that is neither a local folder nor a Hub id is named
  before any loader fails on it, with where weights are (resolve_checkpoint has resolved Hub ids;
  a pretraining run's checkpoint is the folder it will write, so it calls this with None)."""
  if path and not os.path.exists(path):
    raise SystemExit(f"config.checkpoint={path!r} does not exist. {where_weights_are(config)}")


def require_pipeline(config) -> None:
  """localize.py and generate.py sample from a diffusers pipeline folder (config.checkpoint: the
  transformer, scheduler, tokenizers and text encoders); a path that is none is named with what to
  pass instead, before a loader fails on a missing subfolder. A fine-tuning run's workdir holds only
  its exported transformer/, which config.generate.transformer puts into the base pipeline."""
  path = config.checkpoint
  if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "model_index.json")):
    return
  family = families.get(config.model)
  missing = [c for c in ("transformer", *family.text_components)
             if not os.path.isdir(os.path.join(path, c))]
  if not missing:
    return
  if os.path.isdir(os.path.join(path, "transformer")) or os.path.isfile(os.path.join(path, "config.json")):
    raise SystemExit(transformer_only(config, path))
  raise SystemExit(f"config.checkpoint={path!r} is no diffusers pipeline folder: it lacks "
                   f"{', '.join(c + '/' for c in missing)} and model_index.json. "
                   f"{where_weights_are(config)}")


def transformer_only(config, path: str) -> str:
  """What to pass for a folder holding a transformer without its pipeline: a fine-tuning run's
  workdir (its export in <workdir>/transformer), or a transformer folder itself."""
  folder = os.path.join(path, "transformer") if os.path.isdir(os.path.join(path, "transformer")) else path
  base = recorded_base(path) or "<the pipeline it was fine-tuned from>"
  return (f"config.checkpoint={path!r} holds a transformer but no pipeline (no tokenizer/, "
          f"text_encoder/, model_index.json): a fine-tuning run exports only its transformer. Sample "
          f"it inside its base pipeline: --config.checkpoint={base} "
          f"--config.generate.transformer={folder}")


def recorded_base(workdir: str) -> str | None:
  """The base pipeline a training run in `workdir` started from, as its inputs record names it."""
  record = os.path.join(workdir, provenance.RECORD)
  try:
    with open(record) as f:
      base = json.load(f)["run"]["checkpoint"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return base if isinstance(base, str) and base else None


def where_weights_are(config) -> str:
  """Where a run of this config finds weights: a plugin's WHERE_WEIGHTS_ARE (the Shapes world names
  its shipped model), else the family's published weights."""
  for name in config.get("plugins", ()):
    hint = getattr(importlib.import_module(name), "WHERE_WEIGHTS_ARE", None)
    if hint:
      return hint
  return families.get(config.model).published


def validate_generate_config(config) -> None:
  """generate.py: every prompt is drawn once per seed, so no seeds would write no image."""
  cli.require_nonempty(config, "sample.seeds")
  cli.stray_moved_keys(config)

