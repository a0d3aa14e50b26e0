"""FLUX.1 (dev, schnell): everything family-specific around the network in dit_jax/models/flux.py.

- Conversion: diffusers folders through the shared rule; the original single-file layout
  (flux1-dev.safetensors) with its fused QKV tensors, read once and split.
- Prompts: FluxPipeline.encode_prompt (T5 states + pooled CLIP vector); the attention sees T5's tokens.
- Sampling: distilled guidance (no negative prompt), 2x2 latent packing, FLUX's shifted schedule.
- Localization: the concept and the neutral trajectories run in one batch from the same noise, and
  the selected blocks' attention reads the other trajectory's text input to it (TextAttentionSwap).
"""
from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.models.flux import FluxConfig, FluxTransformer
from dit_jax import checkpoints
from dit_jax.checkpoints import torch_to_numpy
from dit_jax.families import Family
from dit_jax.interventions import TextAttentionSwap, TextResidualSwap
from dit_jax.sampling import Predict

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


def example_inputs(config: FluxConfig):
  guidance = jnp.zeros((1,)) if config.guidance_embeds else None
  return (jnp.zeros((1, 1, config.in_channels)), jnp.zeros((1, 1, config.joint_attention_dim)),
          jnp.zeros((1, config.pooled_projection_dim)), jnp.zeros((1,)), jnp.zeros((1, 3)),
          jnp.zeros((1, 3)), guidance)


# ---------------------------------------------------------------------------------------------
# Prompts.


def encode_prompts(pipe, prompts: list[str], negative: bool, device: str, max_length: int) -> dict:
  """{"caption": (B, S, D) T5 states, "pooled": (B, 768) CLIP vector}, as FluxPipeline encodes them."""
  if negative:
    raise ValueError("FLUX.1 uses distilled guidance: it has no negative prompt")
  caption, pooled, _ = pipe.encode_prompt(prompts, prompt_2=None, device=device,
                                          max_sequence_length=max_length)
  return {"caption": torch_to_numpy(caption), "pooled": torch_to_numpy(pooled)}


# ---------------------------------------------------------------------------------------------
# Sampling.


def pack_latents(x: jax.Array) -> jax.Array:
  """NHWC (B, H, W, C) latents -> FLUX's (B, H/2 * W/2, 4C) tokens of 2x2 patches, channel c * 4 +
  2 * row + column within the patch (diffusers' FluxPipeline._pack_latents)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(x: jax.Array, height: int, width: int) -> jax.Array:
  """pack_latents undone: (B, N, 4C) -> NHWC (B, height, width, C), sizes in latent pixels."""
  b, _, channels = x.shape
  x = x.reshape(b, height // 2, width // 2, channels // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, height, width, channels // 4)


def latent_image_ids(height: int, width: int) -> np.ndarray:
  """(height * width, 3) RoPE positions (0, row, column) of a packed grid, as FluxPipeline makes them."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([np.zeros_like(rows), rows, cols], axis=-1).reshape(-1, 3).astype(np.float32)


def flux_predict(module, guidance_scale: float) -> Predict:
  """FLUX.1: one model evaluation per step, no CFG (FluxPipeline without true_cfg_scale).

  The sampler's latents stay NHWC (B, H, W, C) like every family's; each call packs them into 2x2
  patch tokens and unpacks the velocity (the Euler step is elementwise, so this is the same as
  stepping packed latents), and the image positions come from the static grid. cond holds "caption"
  (T5 states) and "pooled" (CLIP), optionally an intervention ("text_swap": TextAttentionSwap, or the
  control TextResidualSwap), a BlockEdit ("block_edit") and concept weights over the T5 tokens ("concept"; then it returns
  (prediction, scores) for every row of the batch).
  Guidance-distilled models (dev) get guidance_scale as their guidance input; schnell none. The
  timestep is the scheduler's t / 1000, as FluxPipeline passes it.
  """
  cfg = module.config

  def predict(params, x, t, cond):
    b, h, w, _ = x.shape
    if h % 2 or w % 2:
      raise ValueError(f"FLUX packs 2x2 latent patches: latent height and width must be even, got {h}x{w}")
    caption = cond["caption"]
    guidance = jnp.full((b,), guidance_scale, jnp.float32) if cfg.guidance_embeds else None
    out = module.apply(
        {"params": params}, pack_latents(x), caption, cond["pooled"],
        jnp.full((b,), t, jnp.float32) / 1000, jnp.asarray(latent_image_ids(h // 2, w // 2)),
        jnp.zeros((caption.shape[1], 3), jnp.float32), guidance=guidance,
        text_swap=cond.get("text_swap"), concept=cond.get("concept"),
        block_edit=cond.get("block_edit"))
    out, scores = out if isinstance(out, tuple) else (out, None)
    out = unpack_latents(out, h, w)
    return out if scores is None else (out, scores)

  return predict




def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
  """FLUX's resolution-dependent shift mu: linear in the image token count (FluxPipeline's)."""
  slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
  return image_seq_len * slope + (base_shift - slope * base_seq_len)


def schedule_kwargs(scheduler_config: dict, num_steps: int, latent_shape) -> dict:
  """What FluxPipeline passes to scheduler.set_timesteps besides the step count: sigmas from 1 to
  1/steps and the shift mu for this image size.

  latent_shape: the sampler's NHWC latent shape without the batch, (H, W, C).
  """
  tokens = (latent_shape[0] // 2) * (latent_shape[1] // 2)
  get = scheduler_config.get
  mu = calculate_shift(tokens, get("base_image_seq_len", 256), get("max_image_seq_len", 4096),
                       get("base_shift", 0.5), get("max_shift", 1.15))
  return {"sigmas": np.linspace(1.0, 1 / num_steps, num_steps), "mu": mu}


# ---------------------------------------------------------------------------------------------
# Localization.


# FLUX interventions by name. "attention" is the paper's (arXiv 2505.18832) and the default;
# "residual" is a control whose effect is mostly its earliest selected block, reported apart.
FLUX_SWAPS = {"attention": TextAttentionSwap, "residual": TextResidualSwap}


def text_stream_swap(loop, params, noise, concept, neutral, mask, reverse, swap_pooled=False,
                     flux_swap="attention"):
  """One intervention run: the concept and the neutral trajectories run in one batch from the same
  noise; in the selected blocks the main trajectory's attention reads the other trajectory's text
  input to the same attention (flux_swap "attention", TextAttentionSwap, the paper's), or its whole
  text stream is replaced onward ("residual", TextResidualSwap, a control). The other trajectory is
  never swapped. The pooled CLIP vector stays the main prompt's (swapping it touches every block)
  unless swap_pooled, where a non-empty selection takes the other's too."""
  n = noise.shape[0]
  both = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), concept, neutral)
  rows = np.arange(2 * n)
  forward = np.where(rows < n, rows + n, rows)     # concept rows read the neutral rows
  backward = np.where(rows >= n, rows - n, rows)   # reverse: neutral rows read the concept rows
  source = jnp.where(reverse, backward, forward).astype(jnp.int32)
  cond = {**both, "text_swap": FLUX_SWAPS[flux_swap](mask, source)}
  if swap_pooled:
    cond["pooled"] = jnp.where(mask.any(), both["pooled"][source], both["pooled"])
  latents = loop(params, jnp.concatenate([noise, noise]), cond)
  return jnp.where(reverse, latents[n:], latents[:n])


# LoRA in double blocks: image and text-stream attention projections (diffusers' FLUX DreamBooth
# targets); in single blocks: the fused projections, as kohya's linear1 (to_q/k/v + proj_mlp in
# diffusers' split layout) and linear2 (proj_out, attention and MLP outputs together).
LORA_TARGETS = ("attn/to_q", "attn/to_k", "attn/to_v", "attn/to_out.0", "attn/add_q_proj",
                "attn/add_k_proj", "attn/add_v_proj", "attn/to_add_out", "proj_mlp", "proj_out")


FAMILY = Family(
    name="flux", title="FLUX", config_cls=FluxConfig, module_cls=FluxTransformer,
    diffusers_class="FluxTransformer2DModel", example_inputs=example_inputs,
    from_original=from_original,
    pipeline_class="FluxPipeline",
    text_components=("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"),
    max_sequence_length=512, encode_prompts=encode_prompts, attention_tokenizer="tokenizer_2",
    predictor=flux_predict, guidance="distilled", schedule_kwargs=schedule_kwargs, latent_patch=2,
    intervene=text_stream_swap,
    intervention_options={"swap_pooled": (False, True), "flux_swap": tuple(FLUX_SWAPS)},
    lora_targets=LORA_TARGETS,
    published="FLUX.1 weights: black-forest-labs/FLUX.1-dev and FLUX.1-schnell on Hugging Face "
              "(diffusers folder, or the single file flux1-dev.safetensors / flux1-schnell.safetensors).")
