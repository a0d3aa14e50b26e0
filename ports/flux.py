"""FLUX.1's original single-file layout (flux1-dev.safetensors): renames, and its fused QKV tensors
read once and split, lazily (OriginalLayout), into diffusers' keys."""
from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from ports import checkpoints


# Original name -> diffusers name, for tensors that are renamed but not reshaped (leaf kept,
# except the RMSNorm "scale" which diffusers calls "weight").
ORIGINAL_RENAMES = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
    "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2",
    "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
    "final_layer.linear": "proj_out",
}


DOUBLE_RENAMES = {
    "img_mod.lin": "norm1.linear",
    "txt_mod.lin": "norm1_context.linear",
    "img_attn.norm.query_norm": "attn.norm_q",
    "img_attn.norm.key_norm": "attn.norm_k",
    "txt_attn.norm.query_norm": "attn.norm_added_q",
    "txt_attn.norm.key_norm": "attn.norm_added_k",
    "img_attn.proj": "attn.to_out.0",
    "txt_attn.proj": "attn.to_add_out",
    "img_mlp.0": "ff.net.0.proj",
    "img_mlp.2": "ff.net.2",
    "txt_mlp.0": "ff_context.net.0.proj",
    "txt_mlp.2": "ff_context.net.2",
}


SINGLE_RENAMES = {
    "modulation.lin": "norm.linear",
    "norm.query_norm": "attn.norm_q",
    "norm.key_norm": "attn.norm_k",
    "linear2": "proj_out",
}


# Fused projections of the original, split along the output axis: every part but the last has
# inner_dim rows, the last takes the rest (the MLP input of linear1).
DOUBLE_SPLITS = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                 "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


SINGLE_SPLITS = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}


# The original final layer emits (shift, scale); diffusers' AdaLayerNormContinuous reads (scale, shift).
SWAPPED_HALVES = {"final_layer.adaLN_modulation.1": "norm_out.linear"}


BLOCKS = {"double_blocks": ("transformer_blocks", DOUBLE_RENAMES, DOUBLE_SPLITS),
          "single_blocks": ("single_transformer_blocks", SINGLE_RENAMES, SINGLE_SPLITS)}


PREFIX = "model.diffusion_model."   # full-pipeline checkpoints (ComfyUI style) nest the transformer


def keep(tensor):
  return tensor


def rows(start: int, stop: int | None):
  # A copy, so that the fused tensor is freed once its last part has been taken.
  return lambda tensor: np.array(tensor[start:stop])


def swap_halves(tensor):
  half = tensor.shape[0] // 2
  return np.concatenate([tensor[half:], tensor[:half]])


class OriginalLayout(Mapping):
  """diffusers-keyed, read-only view of an original FLUX checkpoint; tensors are read on access.

  rules: diffusers key -> (original key, function of the original tensor). A fused original tensor
  is read once and kept only until its last part has been taken, so converting holds the output
  plus the fused tensors of about one block, never a second copy of the weights.
  """

  def __init__(self, state: Mapping[str, np.ndarray], rules: dict[str, tuple[str, Callable]]):
    self._state, self._rules = state, rules
    self._parts_left = collections.Counter(original for original, _ in rules.values())
    self._open = {}

  def __getitem__(self, key):
    original, transform = self._rules[key]
    tensor = self._open.pop(original, None)
    if tensor is None:
      tensor = self._state[original]
    self._parts_left[original] -= 1
    if self._parts_left[original] > 0:
      self._open[original] = tensor
    return transform(tensor)

  def __contains__(self, key):  # without this, Mapping's `in` would read (and use up) a part
    return key in self._rules

  def __iter__(self) -> Iterator[str]:
    return iter(self._rules)

  def __len__(self):
    return len(self._rules)


def original_rules(keys, inner_dim: int) -> dict[str, tuple[str, Callable]]:
  """diffusers key -> (original key, transform) for every key of an original checkpoint."""
  rules, unknown = {}, []
  for key in keys:
    name = key.removeprefix(PREFIX)
    stem, _, leaf = name.rpartition(".")
    leaf = "weight" if leaf == "scale" else leaf
    block = re.fullmatch(r"(double_blocks|single_blocks)\.(\d+)\.(.+)", stem)
    if stem in ORIGINAL_RENAMES:
      rules[f"{ORIGINAL_RENAMES[stem]}.{leaf}"] = (key, keep)
    elif stem in SWAPPED_HALVES:
      rules[f"{SWAPPED_HALVES[stem]}.{leaf}"] = (key, swap_halves)
    elif block and block.group(1) in BLOCKS:
      prefix, renames, splits = BLOCKS[block.group(1)]
      prefix, part = f"{prefix}.{block.group(2)}.", block.group(3)
      if part in renames:
        rules[f"{prefix}{renames[part]}.{leaf}"] = (key, keep)
      elif part in splits:
        names = splits[part]
        for i, target in enumerate(names):
          stop = None if i == len(names) - 1 else (i + 1) * inner_dim
          rules[f"{prefix}{target}.{leaf}"] = (key, rows(i * inner_dim, stop))
      else:
        unknown.append(key)
    else:
      unknown.append(key)
  if unknown:
    raise checkpoints.CheckpointError(f"not a FLUX.1 transformer checkpoint key: {unknown[:10]}")
  return rules


def from_original(state: Mapping[str, np.ndarray], overrides: dict):
  """(diffusers config, lazy diffusers-keyed state) of an original FLUX.1 single-file checkpoint.

  The config is read off the shapes of a few small tensors. Not in the shapes:
  the RoPE split of a head (axes_dims_rope, default (16, 56, 56) for 128-wide heads) and, for
  patch_size > 1, the patch size; pass them as overrides for non-standard models.
  """
  shape = lambda name: tuple(state[next(k for k in (name, PREFIX + name) if k in state)].shape)
  if not any(k.removeprefix(PREFIX) == "double_blocks.0.img_attn.qkv.weight" for k in state):
    raise checkpoints.CheckpointError(
        "not an original FLUX.1 checkpoint: no 'double_blocks.0.img_attn.qkv.weight' key")
  count = lambda kind: len({k.removeprefix(PREFIX).split(".")[1] for k in state
                            if k.removeprefix(PREFIX).startswith(kind + ".")})
  inner_dim, in_channels = shape("img_in.weight")
  head_dim, = shape("double_blocks.0.img_attn.norm.query_norm.scale")
  config = {
      "patch_size": 1, "in_channels": in_channels,
      "out_channels": shape("final_layer.linear.weight")[0],
      "num_layers": count("double_blocks"), "num_single_layers": count("single_blocks"),
      "attention_head_dim": head_dim, "num_attention_heads": inner_dim // head_dim,
      "joint_attention_dim": shape("txt_in.weight")[1],
      "pooled_projection_dim": shape("vector_in.in_layer.weight")[1],
      "guidance_embeds": any(k.removeprefix(PREFIX).startswith("guidance_in.") for k in state),
  }
  if head_dim == 128:
    config["axes_dims_rope"] = (16, 56, 56)
  config.update(overrides)
  if "axes_dims_rope" not in config:
    raise checkpoints.CheckpointError(f"heads of width {head_dim} are not FLUX.1's 128: pass "
                                 "axes_dims_rope (channels per RoPE axis, summing to the head width)")
  config["out_channels"] //= config["patch_size"] ** 2
  return config, OriginalLayout(state, original_rules(state.keys(), inner_dim))
