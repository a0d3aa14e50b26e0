"""SD3 / SD3.5's original single-file layout ("model.diffusion_model.joint_blocks.N..."): renames,
and its fused QKV tensors read once and split (FLUX's lazy OriginalLayout), into diffusers' keys."""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import numpy as np

from ports import checkpoints
from ports.flux import OriginalLayout, keep, rows, swap_halves


PREFIX = "model.diffusion_model."   # the published files nest the transformer under this prefix


# Other components some published files bundle (VAE, text encoders): not the transformer's, not read.
OTHER_COMPONENTS = ("first_stage_model.", "text_encoders.", "cond_stage_model.")


# Original name -> diffusers name, for tensors renamed but not reshaped (the leaf is kept).
ORIGINAL_RENAMES = {
    "x_embedder.proj": "pos_embed.proj",
    "t_embedder.mlp.0": "time_text_embed.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "time_text_embed.timestep_embedder.linear_2",
    "y_embedder.mlp.0": "time_text_embed.text_embedder.linear_1",
    "y_embedder.mlp.2": "time_text_embed.text_embedder.linear_2",
    "context_embedder": "context_embedder",
    "final_layer.linear": "proj_out",
}


BLOCK_RENAMES = {
    "x_block.adaLN_modulation.1": "norm1.linear",
    "context_block.adaLN_modulation.1": "norm1_context.linear",
    "x_block.attn.ln_q": "attn.norm_q", "x_block.attn.ln_k": "attn.norm_k",
    "context_block.attn.ln_q": "attn.norm_added_q", "context_block.attn.ln_k": "attn.norm_added_k",
    "x_block.attn.proj": "attn.to_out.0", "context_block.attn.proj": "attn.to_add_out",
    "x_block.attn2.ln_q": "attn2.norm_q", "x_block.attn2.ln_k": "attn2.norm_k",
    "x_block.attn2.proj": "attn2.to_out.0",
    "x_block.mlp.fc1": "ff.net.0.proj", "x_block.mlp.fc2": "ff.net.2",
    "context_block.mlp.fc1": "ff_context.net.0.proj", "context_block.mlp.fc2": "ff_context.net.2",
}


# Fused q, k, v of the original, split in three equal parts along the output axis.
BLOCK_SPLITS = {"x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
                "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
                "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v")}


# The original AdaLN-continuous layers emit (shift, scale); diffusers' read (scale, shift). Besides
# the final layer, the last block's text modulation is one (context_pre_only).
FINAL_MODULATION = "final_layer.adaLN_modulation.1"


LAST_TEXT_MODULATION = "context_block.adaLN_modulation.1"


def original_rules(keys, num_layers: int) -> dict[str, tuple[str, Callable]]:
  """diffusers key -> (original key, transform) for every transformer key of an original file."""
  rules, unknown = {}, []
  for key in keys:
    name = key.removeprefix(PREFIX)
    if name.startswith(OTHER_COMPONENTS):
      continue
    if name == "pos_embed":
      rules["pos_embed.pos_embed"] = (key, keep)
      continue
    stem, _, leaf = name.rpartition(".")
    block = re.fullmatch(r"joint_blocks\.(\d+)\.(.+)", stem)
    if stem in ORIGINAL_RENAMES:
      rules[f"{ORIGINAL_RENAMES[stem]}.{leaf}"] = (key, keep)
    elif stem == FINAL_MODULATION:
      rules[f"norm_out.linear.{leaf}"] = (key, swap_halves)
    elif block and block.group(2) in BLOCK_RENAMES:
      last = int(block.group(1)) == num_layers - 1 and block.group(2) == LAST_TEXT_MODULATION
      target = f"transformer_blocks.{block.group(1)}.{BLOCK_RENAMES[block.group(2)]}.{leaf}"
      rules[target] = (key, swap_halves if last else keep)
    elif block and block.group(2) in BLOCK_SPLITS:
      for i, part in enumerate(BLOCK_SPLITS[block.group(2)]):
        rules[f"transformer_blocks.{block.group(1)}.{part}.{leaf}"] = (key, thirds(i))
    else:
      unknown.append(key)
  if unknown:
    raise checkpoints.CheckpointError(f"not an SD3 transformer checkpoint key: {unknown[:10]}")
  return rules


def thirds(i: int):
  def part(tensor):
    third = tensor.shape[0] // 3
    return rows(i * third, (i + 1) * third)(tensor)
  return part


def from_original(state: Mapping[str, np.ndarray], overrides: dict):
  """(diffusers config, lazy diffusers-keyed state) of an original SD3 / SD3.5 single-file checkpoint.

  The config is read off the shapes. Not in the shapes: the head width when queries and keys are
  not normalised (SD3 2B: MMDiT's 64, the default) and sample_size (128 for every published model;
  it only sets the stored position table's initial value). Pass overrides for other models.
  """
  name = lambda n: next((k for k in (n, PREFIX + n) if k in state), None)
  if name("joint_blocks.0.x_block.attn.qkv.weight") is None:
    raise checkpoints.CheckpointError(
        "not an original SD3 checkpoint: no 'joint_blocks.0.x_block.attn.qkv.weight' key")
  shape = lambda n: tuple(state[name(n)].shape)
  names = [k.removeprefix(PREFIX) for k in state]
  blocks = [k.split(".") for k in names if k.startswith("joint_blocks.")]
  num_layers = len({b[1] for b in blocks})
  inner_dim, in_channels, patch, _ = shape("x_embedder.proj.weight")
  qk_norm = name("joint_blocks.0.x_block.attn.ln_q.weight") is not None
  head_dim = shape("joint_blocks.0.x_block.attn.ln_q.weight")[0] if qk_norm else 64
  head_dim = overrides.get("attention_head_dim", head_dim)
  if inner_dim % head_dim:
    raise checkpoints.CheckpointError(f"width {inner_dim} is not a multiple of the head width "
                                      f"{head_dim}: pass attention_head_dim")
  caption_dim, joint_dim = shape("context_embedder.weight")
  config = {
      "sample_size": 128, "patch_size": patch, "in_channels": in_channels, "num_layers": num_layers,
      "attention_head_dim": head_dim, "num_attention_heads": inner_dim // head_dim,
      "joint_attention_dim": joint_dim, "caption_projection_dim": caption_dim,
      "pooled_projection_dim": shape("y_embedder.mlp.0.weight")[1],
      "out_channels": shape("final_layer.linear.weight")[0] // patch ** 2,
      "pos_embed_max_size": math.isqrt(shape("pos_embed")[1]),
      "dual_attention_layers": sorted({int(b[1]) for b in blocks if b[3] == "attn2"}),
      "qk_norm": "rms_norm" if qk_norm else None,
  }
  config.update(overrides)
  return config, OriginalLayout(state, original_rules(state.keys(), num_layers))
