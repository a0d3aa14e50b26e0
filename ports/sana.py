"""SANA's original .pth layout -> diffusers' keys and config."""
from __future__ import annotations

import re

import numpy as np

from ports import checkpoints

QK_NORM = "rms_norm_across_heads"   # diffusers' name of the q/k norm of SANA-1.5 and Sprint


# Original module -> diffusers module ("{i}": block index; "" is the model itself). The parameter
# leaf (weight, bias, scale_shift_table) is kept.
ORIGINAL_RENAMES = {
    "x_embedder.proj": "patch_embed.proj",
    "t_block.1": "time_embed.linear",
    "cfg_embedder.mlp.0": "time_embed.guidance_embedder.linear_1",
    "cfg_embedder.mlp.2": "time_embed.guidance_embedder.linear_2",
    "y_embedder.y_proj.fc1": "caption_projection.linear_1",
    "y_embedder.y_proj.fc2": "caption_projection.linear_2",
    "attention_y_norm": "caption_norm",
    "final_layer.linear": "proj_out",
    "final_layer": "",
    "blocks.{i}": "transformer_blocks.{i}",
    "blocks.{i}.attn.proj": "transformer_blocks.{i}.attn1.to_out.0",
    "blocks.{i}.attn.q_norm": "transformer_blocks.{i}.attn1.norm_q",
    "blocks.{i}.attn.k_norm": "transformer_blocks.{i}.attn1.norm_k",
    "blocks.{i}.cross_attn.q_linear": "transformer_blocks.{i}.attn2.to_q",
    "blocks.{i}.cross_attn.proj": "transformer_blocks.{i}.attn2.to_out.0",
    "blocks.{i}.cross_attn.q_norm": "transformer_blocks.{i}.attn2.norm_q",
    "blocks.{i}.cross_attn.k_norm": "transformer_blocks.{i}.attn2.norm_k",
    "blocks.{i}.mlp.inverted_conv.conv": "transformer_blocks.{i}.ff.conv_inverted",
    "blocks.{i}.mlp.depth_conv.conv": "transformer_blocks.{i}.ff.conv_depth",
    "blocks.{i}.mlp.point_conv.conv": "transformer_blocks.{i}.ff.conv_point",
}


# Sprint embeds timestep and guidance side by side; the others nest the timestep in AdaLN-single.
TIMESTEP_RENAMES = {False: "time_embed.emb.timestep_embedder", True: "time_embed.timestep_embedder"}


# Fused projections of the original, split into equal parts along the output axis.
ORIGINAL_SPLITS = {
    "blocks.{i}.attn.qkv": ("transformer_blocks.{i}.attn1.to_q", "transformer_blocks.{i}.attn1.to_k",
                            "transformer_blocks.{i}.attn1.to_v"),
    "blocks.{i}.cross_attn.kv_linear": ("transformer_blocks.{i}.attn2.to_k",
                                        "transformer_blocks.{i}.attn2.to_v"),
}


# Not parameters of the network: the learned null caption (for caption dropout in training), the
# fixed sin-cos table (recomputed from the grid) and the training-only log-variance head.
ORIGINAL_IGNORED = ("y_embedder.y_embedding", "pos_embed", "logvar_linear.weight", "logvar_linear.bias")


# Cross-attention heads of the published models by hidden size (600M, 1600M/4.8B); not in the shapes.
PUBLISHED_CROSS_HEADS = {1152: 16, 2240: 20}


# Positions by training resolution (latent sample_size): only the 2K and 4K models use them.
PUBLISHED_INTERPOLATION_SCALE = {16: None, 32: None, 64: 1.0, 128: 2.0}


LINEAR_HEAD_DIM = 32   # self-attention head size of every SANA model


def rename_original(state, guidance_embeds: bool) -> dict[str, np.ndarray]:
  """diffusers-keyed tensors of an original SANA state dict; unknown keys are an error."""
  renames = {**ORIGINAL_RENAMES, "t_embedder.mlp.0": f"{TIMESTEP_RENAMES[guidance_embeds]}.linear_1",
             "t_embedder.mlp.2": f"{TIMESTEP_RENAMES[guidance_embeds]}.linear_2"}
  out, unknown = {}, []
  for key in state:
    if key in ORIGINAL_IGNORED:
      continue
    module, _, leaf = key.rpartition(".")
    block = re.match(r"blocks\.(\d+)", module)
    index = block.group(1) if block else None
    pattern = re.sub(r"^blocks\.\d+", "blocks.{i}", module)
    if pattern in renames:
      targets, arrays = (renames[pattern],), (state[key],)
    elif pattern in ORIGINAL_SPLITS:
      targets = ORIGINAL_SPLITS[pattern]
      arrays = np.split(state[key], len(targets), axis=0)
    else:
      unknown.append(key)
      continue
    for target, array in zip(targets, arrays):
      out[".".join(filter(None, (target.format(i=index), leaf)))] = array
  if unknown:
    raise checkpoints.CheckpointError(f"not a SANA checkpoint key: {unknown[:10]}")
  return out


def fill_heads(config: dict, heads_key: str, head_dim_key: str, default_heads: int | None):
  """Head count and head size from whichever of them is given, else the published default."""
  hidden, heads, head_dim = config["cross_attention_dim"], config.get(heads_key), config.get(head_dim_key)
  heads = heads or (hidden // head_dim if head_dim else default_heads)
  if not heads:
    raise checkpoints.CheckpointError(f"hidden size {hidden} is not a published SANA size: pass {heads_key}")
  config[heads_key], config[head_dim_key] = heads, head_dim or hidden // heads


def from_original(state, overrides: dict):
  """(diffusers config, diffusers state dict) of an original SANA .pth checkpoint.

  The original file records no config; it is read off the tensor shapes. Not in the shapes: the
  head counts (self-attention heads of 32 channels, cross-attention heads as in the published
  models), the training resolution `sample_size` (from the stored pos_embed table if present),
  whether positions are used (`interpolation_scale`, by resolution as published) and the pipeline's
  `timestep_scale` / `guidance_embeds_scale`. Pass any of them as overrides.
  """
  hidden, config = checkpoints.original_dit_shapes(state, "SANA")
  config.update({
      "mlp_ratio": state["blocks.0.mlp.inverted_conv.conv.weight"].shape[0] / 2 / hidden,
      "attention_bias": "blocks.0.attn.qkv.bias" in state,
      "qk_norm": QK_NORM if "blocks.0.attn.q_norm.weight" in state else None,
      "guidance_embeds": "cfg_embedder.mlp.0.weight" in state,
  })
  config.update(overrides)
  config["cross_attention_dim"] = hidden
  if "sample_size" not in config:
    raise checkpoints.CheckpointError(
        "this SANA checkpoint stores no pos_embed, so its training resolution is unknown: pass "
        "sample_size (latent size: 16 for 512px, 32 for 1024px, 64 for 2048px, 128 for 4096px)")
  config.setdefault("interpolation_scale", PUBLISHED_INTERPOLATION_SCALE.get(config["sample_size"]))
  fill_heads(config, "num_attention_heads", "attention_head_dim", hidden // LINEAR_HEAD_DIM)
  fill_heads(config, "num_cross_attention_heads", "cross_attention_head_dim",
             PUBLISHED_CROSS_HEADS.get(hidden))
  return config, rename_original(state, config["guidance_embeds"])
