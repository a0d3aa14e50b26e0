"""The one conversion mechanism shared by every backbone.

Flax modules in dit_jax are named after diffusers' PyTorch modules, so a Flax parameter path joined
with "." is the diffusers state-dict key, up to the leaf name (kernel/scale -> weight). Linear
kernels are transposed, conv kernels go OIHW <-> HWIO; everything else is copied. A model family adds
only what is specific to it: its config class, its Flax module, and the key renames of its original
(non-diffusers) checkpoint layout.

Tensors are read lazily, one at a time, so converting a large sharded checkpoint holds the output
plus one tensor in host memory, never two full copies.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_dtypes
import numpy as np

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


class CheckpointError(ValueError):
  """A checkpoint that does not fit the model: names the key(s) and shapes involved."""


# ---------------------------------------------------------------------------------------------
# Reading PyTorch checkpoints.


def torch_to_numpy(tensor) -> np.ndarray:
  """A torch tensor as NumPy without upcasting bfloat16 (bits are reinterpreted, not copied)."""
  import torch
  tensor = tensor.detach().cpu()
  if tensor.dtype == torch.bfloat16:
    return tensor.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def numpy_to_torch(array: np.ndarray):
  import torch
  array = np.ascontiguousarray(array)
  if not array.flags.writeable:   # torch cannot wrap read-only memory (e.g. a device_get result)
    array = array.copy()
  if array.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(array)


class LazyStateDict(Mapping):
  """A read-only mapping key -> NumPy array over safetensors files, loading a tensor on access."""

  def __init__(self, key_to_file: dict[str, str]):
    self._key_to_file = key_to_file

  def __getitem__(self, key):
    with open_safetensors(self._key_to_file[key]) as f:
      return torch_to_numpy(f.get_tensor(key))

  def __contains__(self, key) -> bool:   # without it, Mapping's `in` would read the tensor
    return key in self._key_to_file

  def __iter__(self) -> Iterator[str]:
    return iter(self._key_to_file)

  def __len__(self):
    return len(self._key_to_file)


def open_safetensors(path: str):
  """safe_open, with a damaged file named: safetensors' own message ("header too small") says
  neither which file nor what it should hold."""
  from safetensors import SafetensorError, safe_open
  try:
    return safe_open(path, framework="pt")
  except SafetensorError as error:
    raise CheckpointError(
        f"{path} ({os.path.getsize(path)} bytes) is not a complete .safetensors file ({error}): "
        "expected an 8-byte header length, a JSON header of that length and then every tensor's "
        "bytes. It is probably truncated (an interrupted download or copy): fetch or convert it "
        "again.") from None


def safetensors_state_dict(files: list[str]) -> LazyStateDict:
  key_to_file = {}
  for file in files:
    with open_safetensors(file) as f:
      key_to_file.update({k: file for k in f.keys()})
  return LazyStateDict(key_to_file)


def torch_file_state_dict(path: str) -> dict[str, np.ndarray]:
  """A .pth/.pt/.bin file (memory-mapped); unwraps the {"state_dict": ...} wrapper of training runs."""
  import torch
  obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
  for wrapper in ("state_dict", "model", "module"):
    if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
      obj = obj[wrapper]
  if not isinstance(obj, dict):
    raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
  return {k: torch_to_numpy(v) for k, v in obj.items() if hasattr(v, "dtype")}


def read_state_dict(path: str) -> Mapping[str, np.ndarray]:
  """Tensors of a single checkpoint file (.safetensors, .pth, .pt, .bin)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint file at {path}")
  if path.endswith(".safetensors"):
    return safetensors_state_dict([path])
  return torch_file_state_dict(path)


def diffusers_model_dir(path: str, subfolder: str = "transformer") -> str:
  """The folder holding config.json and the weights: `path` itself or its `subfolder`."""
  for candidate in (path, os.path.join(path, subfolder)):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      return candidate
  raise FileNotFoundError(
      f"{path} is not a diffusers model folder: expected config.json and {WEIGHTS_NAME} (or sharded "
      f"files with {INDEX_NAME}) in it or in its '{subfolder}/' subfolder, as in a pipeline folder "
      "saved by diffusers' save_pretrained or downloaded from the model's Hugging Face repository.")


def read_diffusers_folder(path: str, subfolder: str = "transformer"):
  """(config dict, lazy state dict) of a diffusers model folder, sharded or not."""
  model_dir = diffusers_model_dir(path, subfolder)
  with open(os.path.join(model_dir, "config.json")) as f:
    config = json.load(f)
  index = os.path.join(model_dir, INDEX_NAME)
  if os.path.isfile(index):
    with open(index) as f:
      files = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(model_dir, name) for name in files]
  elif os.path.isfile(os.path.join(model_dir, WEIGHTS_NAME)):
    files = [os.path.join(model_dir, WEIGHTS_NAME)]
  else:
    raise FileNotFoundError(f"{model_dir} has config.json but neither {WEIGHTS_NAME} nor {INDEX_NAME}")
  return config, safetensors_state_dict(files)


def original_dit_shapes(state: Mapping[str, np.ndarray], family: str) -> tuple[int, dict]:
  """(hidden width, config values) that the tensor shapes of an original PixArt-style checkpoint
  (PixArt, SANA: x_embedder, blocks.N, final_layer, y_embedder, optional pos_embed) tell."""
  if "x_embedder.proj.weight" not in state:
    raise CheckpointError(f"not an original {family} checkpoint: no 'x_embedder.proj.weight' key")
  hidden, in_channels, patch, _ = state["x_embedder.proj.weight"].shape
  config = {"in_channels": in_channels, "patch_size": patch,
            "num_layers": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
            "out_channels": state["final_layer.linear.weight"].shape[0] // patch ** 2,
            "caption_channels": state["y_embedder.y_proj.fc1.weight"].shape[1]}
  if "pos_embed" in state:   # the stored sin-cos table gives the training grid
    config["sample_size"] = int(round(state["pos_embed"].shape[1] ** 0.5)) * patch
  return hidden, config


# ---------------------------------------------------------------------------------------------
# The key and layout rule.

LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def torch_key(path: tuple[str, ...]) -> str:
  return ".".join(path[:-1] + (LEAF_TO_TORCH.get(path[-1], path[-1]),))


def to_flax_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 2:   # Linear: (out, in) -> (in, out)
    return array.T
  if leaf == "kernel" and array.ndim == 4:   # Conv: OIHW -> HWIO
    return array.transpose(2, 3, 1, 0)
  if leaf == "kernel" and array.ndim == 3:   # Conv1d: OIW -> WIO
    return array.transpose(2, 1, 0)
  return array


def to_torch_layout(leaf: str, array: np.ndarray) -> np.ndarray:
  if leaf == "kernel" and array.ndim == 2:
    return array.T
  if leaf == "kernel" and array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  if leaf == "kernel" and array.ndim == 3:
    return array.transpose(2, 1, 0)
  return array


def _path_names(path) -> tuple[str, ...]:
  return tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)


def state_dict_to_flax(state: Mapping[str, np.ndarray], param_shapes: Any, dtype=None,
                       ignore: Callable[[str], bool] = lambda key: False) -> Any:
  """Flax params shaped like `param_shapes` (e.g. from jax.eval_shape of init) from a state dict.

  Every parameter must be found with the right shape, and every key of `state` must be used (or
  ignored by `ignore`), else CheckpointError names the key(s) and shapes. `dtype` casts the weights
  (None keeps the checkpoint's dtype).
  """
  used = set()

  def convert(path, expected):
    names = _path_names(path)
    key = torch_key(names)
    if key not in state:
      raise CheckpointError(f"checkpoint is missing key '{key}' (expected shape "
                            f"{to_torch_layout(names[-1], np.empty(expected.shape)).shape})")
    array = to_flax_layout(names[-1], state[key])
    if array.shape != tuple(expected.shape):
      raise CheckpointError(
          f"shape mismatch for '{key}': checkpoint has {tuple(state[key].shape)}, model expects "
          f"{to_torch_layout(names[-1], np.empty(expected.shape)).shape} (Flax {tuple(expected.shape)})")
    used.add(key)
    return np.asarray(array, dtype=dtype or array.dtype)

  params = jax.tree_util.tree_map_with_path(convert, param_shapes)
  unexpected = sorted(k for k in state if k not in used and not ignore(k))
  if unexpected:
    more = f" (and {len(unexpected) - 10} more)" if len(unexpected) > 10 else ""
    raise CheckpointError(f"checkpoint has keys the model does not use: {unexpected[:10]}{more}")
  return params


def flax_to_state_dict(params: Any) -> dict[str, np.ndarray]:
  """diffusers state dict (NumPy arrays) from Flax params: the inverse of state_dict_to_flax."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = _path_names(path)
    out[torch_key(names)] = np.ascontiguousarray(to_torch_layout(names[-1], np.asarray(leaf)))
  return out


# ---------------------------------------------------------------------------------------------
# Writing.


def save_diffusers_folder(params: Any, config: dict, class_name: str, out_dir: str,
                          max_shard_bytes: int = 10 * 2**30) -> None:
  """Write a diffusers model folder (config.json + safetensors, sharded past max_shard_bytes)."""
  from safetensors.torch import save_file
  import diffusers
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump({"_class_name": class_name, "_diffusers_version": diffusers.__version__, **config},
              f, indent=2, sort_keys=True)
  state = flax_to_state_dict(params)
  shards, current, size = [], {}, 0
  for key in sorted(state):
    nbytes = state[key].nbytes
    if current and size + nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[key], size = state[key], size + nbytes
  shards.append(current)
  if len(shards) == 1:
    save_file({k: numpy_to_torch(v) for k, v in shards[0].items()}, os.path.join(out_dir, WEIGHTS_NAME))
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    name = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file({k: numpy_to_torch(v) for k, v in shard.items()}, os.path.join(out_dir, name))
    weight_map.update({k: name for k in shard})
  total = sum(v.nbytes for v in state.values())
  with open(os.path.join(out_dir, INDEX_NAME), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
