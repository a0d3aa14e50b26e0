"""PixArt-alpha / PixArt-Sigma's original .pth layout -> diffusers' keys and config."""
from __future__ import annotations

import re

import numpy as np

from ports import checkpoints


# Original PixArt name -> diffusers name, for tensors that are renamed but not reshaped.
ORIGINAL_RENAMES = {
    "x_embedder.proj": "pos_embed.proj",
    "t_embedder.mlp.0": "adaln_single.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "adaln_single.emb.timestep_embedder.linear_2",
    "csize_embedder.mlp.0": "adaln_single.emb.resolution_embedder.linear_1",
    "csize_embedder.mlp.2": "adaln_single.emb.resolution_embedder.linear_2",
    "ar_embedder.mlp.0": "adaln_single.emb.aspect_ratio_embedder.linear_1",
    "ar_embedder.mlp.2": "adaln_single.emb.aspect_ratio_embedder.linear_2",
    "t_block.1": "adaln_single.linear",
    "y_embedder.y_proj.fc1": "caption_projection.linear_1",
    "y_embedder.y_proj.fc2": "caption_projection.linear_2",
    "final_layer.linear": "proj_out",
    "final_layer.scale_shift_table": "scale_shift_table",
}


BLOCK_RENAMES = {
    "attn.proj": "attn1.to_out.0",
    "cross_attn.q_linear": "attn2.to_q",
    "cross_attn.proj": "attn2.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "scale_shift_table": "scale_shift_table",
}


# Fused projections of the original, split into equal parts along the output axis.
BLOCK_SPLITS = {"attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
                "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v")}


# Not parameters of the network: the learned null caption (used only to drop captions in training)
# and the fixed sin-cos table (recomputed from the grid).
ORIGINAL_IGNORED = ("y_embedder.y_embedding", "pos_embed")


def rename_original(state) -> dict[str, np.ndarray]:
  out, unknown = {}, []
  for key in state:
    stem, _, leaf = key.rpartition(".")
    block = re.fullmatch(r"blocks\.(\d+)\.(.+)", stem if leaf in ("weight", "bias") else key)
    if key in ORIGINAL_IGNORED:
      continue
    if key in ORIGINAL_RENAMES:           # bare parameters such as final_layer.scale_shift_table
      out[ORIGINAL_RENAMES[key]] = state[key]
    elif stem in ORIGINAL_RENAMES:
      out[f"{ORIGINAL_RENAMES[stem]}.{leaf}"] = state[key]
    elif block and block.group(2) in BLOCK_RENAMES:
      suffix = "" if block.group(2) == "scale_shift_table" else f".{leaf}"
      out[f"transformer_blocks.{block.group(1)}.{BLOCK_RENAMES[block.group(2)]}{suffix}"] = state[key]
    elif block and block.group(2) in BLOCK_SPLITS:
      parts = BLOCK_SPLITS[block.group(2)]
      for name, chunk in zip(parts, np.split(state[key], len(parts), axis=0)):
        out[f"transformer_blocks.{block.group(1)}.{name}.{leaf}"] = chunk
    else:
      unknown.append(key)
  if unknown:
    raise checkpoints.CheckpointError(f"not a PixArt checkpoint key: {unknown[:10]}")
  return out


def from_original(state, overrides: dict):
  """(diffusers config, diffusers state dict) of an original PixArt(-Sigma) .pth checkpoint.

  The original file records no config; it is read off the tensor shapes. Two values are not in the
  shapes: the head count (default hidden / 72, as in every published PixArt) and the training
  resolution `sample_size` (from the stored pos_embed table if present). Pass them as overrides,
  with interpolation_scale for models that use a non-default one (e.g. PixArt-Sigma 256px: 0.5).
  """
  hidden, config = checkpoints.original_dit_shapes(state, "PixArt")
  config.update({"num_attention_heads": hidden // 72, "attention_head_dim": 72,
                 "use_additional_conditions": "csize_embedder.mlp.0.weight" in state})
  config.update(overrides)
  if "num_attention_heads" in overrides and "attention_head_dim" not in overrides:
    config["attention_head_dim"] = hidden // config["num_attention_heads"]
  config["cross_attention_dim"] = config["num_attention_heads"] * config["attention_head_dim"]
  if "sample_size" not in config:
    raise checkpoints.CheckpointError(
        "this PixArt checkpoint stores no pos_embed, so its training resolution is unknown: pass "
        "sample_size (latent size, e.g. 128 for 1024px, 64 for 512px, 32 for 256px)")
  return config, rename_original(state)
