"""Load any supported backbone from what users have on disk, and save it back.

    load(path, "pixart") -> (Flax module, params)

`path` may be a diffusers pipeline or model folder (converted on the fly), an original single-file
checkpoint (.pth / .safetensors), or a Flax checkpoint written by `save_flax` (orbax).
"""
from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ports import checkpoints
from dit_jax import families
from dit_jax.families import Family

FLAX_CONFIG = "dit_jax_config.json"


def param_shapes(fam: Family, config) -> Any:
  """The params' shapes and dtypes for `config` (what conversion fills in)."""
  return _param_shapes(fam.module_cls, fam.example_inputs, config)


@functools.lru_cache(maxsize=32)
def _param_shapes(module_cls, example_inputs, config) -> Any:
  # Tracing init costs seconds on a CPU, and a study or test session loads the same config dozens
  # of times (every fine-tuning run, every pipeline). The configs are frozen dataclasses, the
  # result holds only ShapeDtypeStructs (immutable), and state_dict_to_flax builds a new tree.
  module = module_cls(config=config)
  return jax.eval_shape(module.init, jax.random.key(0), *example_inputs(config))["params"]


def from_state_dict(fam: Family, config_dict: dict, state: Mapping[str, np.ndarray], dtype=None):
  """(module, params) from a diffusers config dict and a diffusers-keyed state dict."""
  config = fam.config_cls.from_diffusers(config_dict)
  params = checkpoints.state_dict_to_flax(state, param_shapes(fam, config), dtype, fam.ignore_key)
  return fam.module_cls(config=config, dtype=dtype or jnp.float32), params


def is_flax_checkpoint(path: str) -> bool:
  return os.path.isfile(os.path.join(path, FLAX_CONFIG))


def load(path: str, family_name: str, dtype=None, **original_overrides):
  """(Flax module, params) from a diffusers folder, an original checkpoint file or a Flax checkpoint.

  `dtype` (e.g. jnp.bfloat16) casts weights and sets the compute dtype; None keeps the checkpoint's
  weights and computes in float32. `original_overrides` fill in config values an original
  single-file checkpoint does not record (e.g. sample_size).
  """
  fam = families.get(family_name)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} does not exist. Expected a diffusers folder (config.json + "
        f"{checkpoints.WEIGHTS_NAME}, or the pipeline folder with transformer/), an original checkpoint "
        f"file, or a dit_jax Flax checkpoint. {fam.published}")
  if os.path.isdir(path) and is_flax_checkpoint(path):
    return load_flax(path, dtype, expect=family_name)
  if os.path.isdir(path):
    config_dict, state = checkpoints.read_diffusers_folder(path)
    check_diffusers_class(path, config_dict, fam)
  else:
    config_dict, state = fam.from_original(checkpoints.read_state_dict(path), original_overrides)
  return from_state_dict(fam, config_dict, state, dtype)


def save_flax(path: str, family_name: str, module, params) -> None:
  """Orbax checkpoint of params plus the config needed to rebuild the module."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(path)
  os.makedirs(path, exist_ok=True)
  with ocp.StandardCheckpointer() as checkpointer:  # leaving the block waits for the async write
    checkpointer.save(os.path.join(path, "params"), params, force=True)
  with open(os.path.join(path, FLAX_CONFIG), "w") as f:
    json.dump({"family": family_name, "config": module.config.to_diffusers()}, f, indent=2)


def check_diffusers_class(path: str, config_dict: dict, fam: Family) -> None:
  """Refuse a diffusers folder whose config.json records another model class than the family's."""
  recorded = config_dict.get("_class_name")
  if recorded and recorded != fam.diffusers_class:
    owner = next((name for name in families.names()
                  if families.get(name).diffusers_class == recorded), "no known family")
    raise ValueError(f"{path} holds a {recorded} ({owner}), not the {fam.name} model asked for "
                     f"({fam.diffusers_class}): pass --model {owner}" if owner != "no known family"
                     else f"{path} holds a {recorded}, not the {fam.name} model asked for "
                     f"({fam.diffusers_class})")


def load_flax(path: str, dtype=None, expect: str | None = None):
  """(module, params) of a Flax checkpoint written by save_flax; `expect` (a family name) refuses a
  checkpoint of another family."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(path)
  with open(os.path.join(path, FLAX_CONFIG)) as f:
    meta = json.load(f)
  if expect is not None and meta["family"] != expect:
    raise ValueError(f"{path} is a Flax checkpoint of a {meta['family']} model, not {expect}: "
                     f"pass --model {meta['family']}")
  fam = families.get(meta["family"])
  config = fam.config_cls.from_diffusers(meta["config"])
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.join(path, "params"))
  if dtype is not None:
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
  return fam.module_cls(config=config, dtype=dtype or jnp.float32), params


def export_diffusers(path: str, family_name: str, module, params) -> None:
  """A diffusers model folder that diffusers' own from_pretrained loads."""
  fam = families.get(family_name)
  checkpoints.save_diffusers_folder(params, module.config.to_diffusers(), fam.diffusers_class, path)
