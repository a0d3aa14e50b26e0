"""The denoising loop in JAX, and each family's guided prediction.

    latents = denoise(predict, scheduler, params, noise, cond)

`predict(params, x, t, cond)` is one guided model evaluation (classifier-free guidance for PixArt and
SANA, distilled guidance for FLUX); `cond` is a dict of arrays (text states, masks, micro-conditions,
an optional intervention), so the whole loop is one `lax.scan` that jit, vmap and sharding compose
over. Seeds map to noise one by one, so batching never changes an image.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.interventions import TextSwap

Predict = Callable[[dict, jax.Array, jax.Array, dict], jax.Array]


def noise_for_seeds(seeds: Sequence[int], shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """(len(seeds), *shape) standard normal noise; row i depends only on seeds[i]."""
  keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
  return jax.vmap(lambda k: jax.random.normal(jax.random.wrap_key_data(k), shape, dtype))(keys)


def denoise(predict: Predict, scheduler, params, noise: jax.Array, cond: dict):
  """Run the scheduler from `noise` (unscaled) to the final latents.

  If `predict` returns (prediction, aux) -- attention scores when cond has a "concept" -- the aux of
  every step comes back too: (latents, aux stacked over steps).
  """
  timesteps = jnp.asarray(scheduler.timesteps)
  x = (noise * scheduler.init_noise_sigma).astype(noise.dtype)

  def step(carry, i):
    x, state = carry
    out = predict(params, x, timesteps[i], cond)
    prediction, aux = out if isinstance(out, tuple) else (out, None)
    x, state = scheduler.step(state, i, prediction, x)
    return (x, state), aux

  (x, _), aux = jax.lax.scan(step, (x, scheduler.init_state(x)), jnp.arange(len(timesteps)))
  return x if aux is None else (x, aux)


def classifier_free_guidance(model_call: Callable, guidance_scale: float):
  """Wrap model_call(params, x, t, text) -> output (or (output, scores)) into a CFG prediction.

  The unconditional and conditional halves run as one batch of 2B, as diffusers does. `text` holds
  caption, caption_mask, micro-conditions, and optionally a TextSwap and a concept mask; these two
  touch only the
  conditional half, so interventions never change the unconditional branch, and scores come from
  the conditional half alone.
  """
  def predict(params, x, t, cond):
    text = {k: cond.get(k) for k in ("caption", "caption_mask", "text_swap", "concept",
                                     "resolution", "aspect_ratio")}
    if guidance_scale <= 1.0:
      return model_call(params, x, t, text)
    both = lambda a, b: None if b is None else jnp.concatenate([a, b], axis=0)
    swap = text["text_swap"]
    text = {"resolution": both(text["resolution"], text["resolution"]),
            "aspect_ratio": both(text["aspect_ratio"], text["aspect_ratio"]),
            "caption": both(cond["uncond_caption"], text["caption"]),
            "caption_mask": both(cond.get("uncond_caption_mask"), text["caption_mask"]),
            "concept": both(jnp.zeros_like(text["concept"]) if text["concept"] is not None else None,
                            text["concept"]),
            "text_swap": None if swap is None else TextSwap(
                swap.block_mask, both(cond["uncond_caption"], swap.caption),
                both(cond.get("uncond_caption_mask"), swap.caption_mask))}
    out = model_call(params, jnp.concatenate([x, x], axis=0), t, text)
    out, scores = out if isinstance(out, tuple) else (out, None)
    uncond, conditional = jnp.split(out, 2, axis=0)
    guided = uncond + guidance_scale * (conditional - uncond)
    return guided if scores is None else (guided, jnp.split(scores, 2, axis=0)[1])
  return predict


def cross_attention_predict(module, guidance_scale: float) -> Predict:
  """PixArt and SANA: CFG over a cross-attention DiT; learned-sigma channels dropped after guidance.

  The model gets the timestep times the config's timestep_scale (SANA) and, for PixArt models that
  use them, the resolution and aspect-ratio micro-conditions.
  """
  cfg = module.config
  if getattr(cfg, "guidance_embeds", False):
    raise NotImplementedError("guidance-distilled SANA (Sprint) needs its own SCM sampler")

  def model_call(params, x, t, text):
    b = x.shape[0]
    extra = {}
    if getattr(cfg, "additional_conditions", False):
      extra = dict(resolution=text["resolution"], aspect_ratio=text["aspect_ratio"])
    timestep = jnp.full((b,), t, jnp.float32) * getattr(cfg, "timestep_scale", 1.0)
    out = module.apply({"params": params}, x, timestep, text["caption"], text.get("caption_mask"),
                       text_swap=text.get("text_swap"), concept=text.get("concept"), **extra)
    drop_sigma = lambda o: o[..., :cfg.in_channels] if cfg.output_channels == 2 * cfg.in_channels else o
    return (drop_sigma(out[0]), out[1]) if isinstance(out, tuple) else drop_sigma(out)

  return classifier_free_guidance(model_call, guidance_scale)


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
  control TextResidualSwap) and concept weights over the T5 tokens ("concept"; then it returns
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
        text_swap=cond.get("text_swap"), concept=cond.get("concept"))
    out, scores = out if isinstance(out, tuple) else (out, None)
    out = unpack_latents(out, h, w)
    return out if scores is None else (out, scores)

  return predict


PREDICTORS = {"pixart": cross_attention_predict, "sana": cross_attention_predict, "flux": flux_predict}


def calculate_shift(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
  """FLUX's resolution-dependent shift mu: linear in the image token count (FluxPipeline's)."""
  slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
  return image_seq_len * slope + (base_shift - slope * base_seq_len)


def schedule_kwargs(family: str, scheduler_config: dict, num_steps: int, latent_shape) -> dict:
  """What the family's diffusers pipeline passes to scheduler.set_timesteps besides the step count.

  latent_shape: the sampler's NHWC latent shape without the batch, (H, W, C).
  """
  if family != "flux":
    return {}
  tokens = (latent_shape[0] // 2) * (latent_shape[1] // 2)
  get = scheduler_config.get
  mu = calculate_shift(tokens, get("base_image_seq_len", 256), get("max_image_seq_len", 4096),
                       get("base_shift", 0.5), get("max_shift", 1.15))
  return {"sigmas": np.linspace(1.0, 1 / num_steps, num_steps), "mu": mu}
