"""FLUX.1 (dev, schnell): everything family-specific around the network in dit_jax/models/flux.py.

- Conversion: diffusers folders through the shared rule; the original single-file layout
  (flux1-dev.safetensors) with its fused QKV tensors, read once and split.
- Prompts: FluxPipeline.encode_prompt (T5 states + pooled CLIP vector); the attention sees T5's tokens.
- Sampling: distilled guidance (no negative prompt), 2x2 latent packing, FLUX's shifted schedule.
- Localization: the concept and the neutral trajectories run in one batch from the same noise, and
  the selected blocks' attention reads the other trajectory's text input to it (TextAttentionSwap).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.models.flux import FluxConfig, FluxTransformer, round_to
from ports.checkpoints import torch_to_numpy
from dit_jax.families import Family
from dit_jax.models.interventions import TextAttentionSwap, TextResidualSwap
from dit_jax.diffusion.denoise import Predict
from ports import flux as flux_port


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

  def timestep(t, batch: int):
    t = jnp.full((batch,), t, jnp.float32)
    if not module.round_conditioning:
      return t / 1000
    # FluxPipeline: t.to(latents.dtype), then / 1000 in that dtype (the model rounds the rest).
    return round_to(module.dtype, round_to(module.dtype, t) / 1000)

  def predict(params, x, t, cond):
    b, h, w, _ = x.shape
    if h % 2 or w % 2:
      raise ValueError(f"FLUX packs 2x2 latent patches: latent height and width must be even, got {h}x{w}")
    caption = cond["caption"]
    guidance = jnp.full((b,), guidance_scale, jnp.float32) if cfg.guidance_embeds else None
    out = module.apply(
        {"params": params}, pack_latents(x), caption, cond["pooled"],
        timestep(t, b), jnp.asarray(latent_image_ids(h // 2, w // 2)),
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
    from_original=flux_port.from_original,
    pipeline_class="FluxPipeline",
    text_components=("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"),
    max_sequence_length=512, encode_prompts=encode_prompts, attention_tokenizer="tokenizer_2",
    predictor=flux_predict, guidance="distilled", schedule_kwargs=schedule_kwargs, latent_patch=2,
    intervene=text_stream_swap,
    intervention_options={"swap_pooled": (False, True), "flux_swap": tuple(FLUX_SWAPS)},
    lora_targets=LORA_TARGETS,
    published="FLUX.1 weights: black-forest-labs/FLUX.1-dev and FLUX.1-schnell on Hugging Face "
              "(diffusers folder, or the single file flux1-dev.safetensors / flux1-schnell.safetensors).")
