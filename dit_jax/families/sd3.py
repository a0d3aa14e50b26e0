"""Stable Diffusion 3 / 3.5: everything family-specific around the network in dit_jax/models/sd3.py.

- Conversion: diffusers folders through the shared rule; the original single-file layout
  (sd3_medium.safetensors, sd3.5_large.safetensors: "model.diffusion_model.joint_blocks.N...")
  with its fused QKV tensors, read once and split (FLUX's lazy OriginalLayout).
- Prompts: StableDiffusion3Pipeline.encode_prompt. The attention sees CLIP's tokens (CLIP-L and
  CLIP-G states side by side, padded to the tokenizer's 77) followed by T5's, so a concept's
  positions are looked up in both parts.
- Sampling: classifier-free guidance (negative prompt, 2B batch) and flow-match Euler with the
  scheduler's shift; the model patchifies NHWC latents itself.
- Localization: FLUX's two-trajectory run (concept and neutral prompts in one batch from the same
  noise, the selected blocks' attention reads the neutral trajectory's text input), under CFG with
  the unconditional branch untouched.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from dit_jax import checkpoints
from dit_jax.checkpoints import torch_to_numpy
from dit_jax.families import Family
from dit_jax.families.flux import (OriginalLayout, calculate_shift, keep, rows, swap_halves,
                                   text_stream_swap)
from dit_jax.interventions import ConceptProbe, TextAttentionSwap, edit_conditional_half
from dit_jax.models.sd3 import SD3Config, SD3Transformer
from dit_jax.sampling import Predict

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


def example_inputs(config: SD3Config):
  p = config.patch_size
  return (jnp.zeros((1, p, p, config.in_channels)), jnp.zeros((1, 1, config.joint_attention_dim)),
          jnp.zeros((1, config.pooled_projection_dim)), jnp.zeros((1,)))


# ---------------------------------------------------------------------------------------------
# Prompts.


def encode_prompts(pipe, prompts: list[str], negative: bool, device: str, max_length: int) -> dict:
  """{"caption": (B, 77 + T5 tokens, D) joint CLIP ++ T5 states, "pooled": (B, 2048) CLIP-L ++
  CLIP-G pooled vectors}, as StableDiffusion3Pipeline encodes them. The pipeline encodes a negative
  prompt exactly as a prompt (same encoders, no clip_skip), so `negative` changes nothing."""
  caption, _, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, prompt_3=None, device=device,
                                             do_classifier_free_guidance=False,
                                             max_sequence_length=max_length)
  return {"caption": torch_to_numpy(caption), "pooled": torch_to_numpy(pooled)}


def attention_segments(pipe, max_length: int) -> list[tuple[str, int]]:
  """The joint text sequence: CLIP's tokens padded to its length (CLIP-L's and CLIP-G's tokenizers
  split text the same way, their states sit side by side per token), then T5's."""
  return [("tokenizer", pipe.tokenizer_max_length), ("tokenizer_3", max_length)]


# ---------------------------------------------------------------------------------------------
# Sampling.


def sd3_predict(module, guidance_scale: float) -> Predict:
  """StableDiffusion3Pipeline's step: CFG over the batch [unconditional; conditional] when
  guidance_scale > 1, the timestep as the scheduler gives it (sigma * 1000).

  cond holds "caption", "pooled" (and "uncond_caption", "uncond_pooled" for CFG), optionally a
  TextAttentionSwap ("text_swap", rows indexing the conditional batch), a BlockEdit ("block_edit",
  likewise) and concept weights
  ("concept"; then it returns (prediction, scores of the conditional rows)). Interventions and
  scoring touch the conditional half only.
  """
  def call(params, x, t, caption, pooled, swap, concept, block_edit):
    timestep = jnp.full((x.shape[0],), t, jnp.float32)
    return module.apply({"params": params}, x, caption, pooled, timestep, text_swap=swap,
                        concept=concept, block_edit=block_edit)

  def predict(params, x, t, cond):
    swap, concept, block_edit = cond.get("text_swap"), cond.get("concept"), cond.get("block_edit")
    if guidance_scale <= 1.0:
      return call(params, x, t, cond["caption"], cond["pooled"], swap, concept, block_edit)
    b = x.shape[0]
    both = lambda uncond, conditional: jnp.concatenate([uncond, conditional])
    if swap is not None:   # unconditional rows read their own text; conditional rows shift by b
      own = jnp.arange(b, dtype=swap.source.dtype)
      swap = TextAttentionSwap(swap.block_mask, both(own, swap.source + b))
    if concept is not None:   # the unconditional rows ask for nothing: their scores are dropped
      concept = ConceptProbe(both(jnp.zeros_like(concept.weights), concept.weights))
    out = call(params, both(x, x), t, both(cond["uncond_caption"], cond["caption"]),
               both(cond["uncond_pooled"], cond["pooled"]), swap, concept,
               edit_conditional_half(block_edit, b))
    out, scores = out if isinstance(out, tuple) else (out, None)
    uncond, conditional = jnp.split(out, 2)
    guided = uncond + guidance_scale * (conditional - uncond)
    return guided if scores is None else (guided, jnp.split(scores, 2)[1])

  return predict


def schedule_kwargs(scheduler_config: dict, num_steps: int, latent_shape) -> dict:
  """What StableDiffusion3Pipeline passes to set_timesteps besides the step count: nothing with the
  published schedulers (a static shift, 3.0); mu for schedulers with dynamic shifting, from the
  image token count at 2x2 patches (every SD3 and SD3.5 model's; the pipeline's max_shift default
  is 1.16, not FLUX's 1.15)."""
  if not scheduler_config.get("use_dynamic_shifting"):
    return {}
  get = scheduler_config.get
  tokens = (latent_shape[0] // 2) * (latent_shape[1] // 2)
  return {"mu": calculate_shift(tokens, get("base_image_seq_len", 256), get("max_image_seq_len", 4096),
                                get("base_shift", 0.5), get("max_shift", 1.16))}


FAMILY = Family(
    name="sd3", title="SD3", config_cls=SD3Config, module_cls=SD3Transformer,
    diffusers_class="SD3Transformer2DModel", example_inputs=example_inputs,
    from_original=from_original,
    pipeline_class="StableDiffusion3Pipeline",
    text_components=("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3",
                     "text_encoder_3"),
    max_sequence_length=256, encode_prompts=encode_prompts, attention_tokenizer="tokenizer_3",
    attention_segments=attention_segments,
    predictor=sd3_predict, guidance="cfg", schedule_kwargs=schedule_kwargs,
    # The paper's attention-input swap only; the pooled vector (every block's modulation) is swapped
    # with it only as the separately reported option.
    intervene=functools.partial(text_stream_swap, flux_swap="attention"),
    intervention_options={"swap_pooled": (False, True)},
    published="SD3 / SD3.5 weights: stabilityai/stable-diffusion-3-medium-diffusers, "
              "stable-diffusion-3.5-large and stable-diffusion-3.5-medium on Hugging Face (diffusers "
              "folder, or the single files sd3_medium.safetensors / sd3.5_large.safetensors / "
              "sd3.5_medium.safetensors).")
