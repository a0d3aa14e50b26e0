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

from dit_jax.models.interventions import ConceptProbe, TextSwap, during_steps, edit_conditional_half

Predict = Callable[[dict, jax.Array, jax.Array, dict], jax.Array]


def noise_for_seeds(seeds: Sequence[int], shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """(len(seeds), *shape) standard normal noise; row i depends only on seeds[i]."""
  keys = jnp.stack([jax.random.key_data(jax.random.key(int(s))) for s in seeds])
  return jax.vmap(lambda k: jax.random.normal(jax.random.wrap_key_data(k), shape, dtype))(keys)


def denoise(predict: Predict, scheduler, params, noise: jax.Array, cond: dict):
  """Run the scheduler from `noise` (unscaled) to the final latents.

  If `predict` returns (prediction, aux) -- attention scores when cond has a "concept" -- the aux of
  every step comes back too: (latents, aux stacked over steps).

  cond["step_window"] ((2,) int32 [start, end), optional): the intervention in cond acts only on
  steps start <= i < end of the schedule (interventions.during_steps); without it every step.
  """
  timesteps = jnp.asarray(scheduler.timesteps)
  x = (noise * scheduler.init_noise_sigma).astype(noise.dtype)
  if hasattr(predict, "hoist"):   # what every step would compute alike, computed once here
    predict, cond = predict.hoist(params, cond)
  window = cond.get("step_window")
  cond = {k: v for k, v in cond.items() if k != "step_window"}

  def step(carry, i):
    x, state = carry
    at_step = cond if window is None else during_steps(cond, window, i)
    out = predict(params, x, timesteps[i], at_step)
    prediction, aux = out if isinstance(out, tuple) else (out, None)
    x, state = scheduler.step(state, i, prediction, x)
    return (x, state), aux

  (x, _), aux = jax.lax.scan(step, (x, scheduler.init_state(x)), jnp.arange(len(timesteps)))
  return x if aux is None else (x, aux)


def classifier_free_guidance(model_call: Callable, guidance_scale: float):
  """Wrap model_call(params, x, t, text) -> output (or (output, scores)) into a CFG prediction.

  The unconditional and conditional halves run as one batch of 2B, as diffusers does. `text` holds
  caption, caption_mask, micro-conditions, and optionally a TextSwap, a BlockEdit and a concept
  mask; these touch only the conditional half, so interventions never change the unconditional
  branch, and scores come from the conditional half alone.
  """
  def predict(params, x, t, cond):
    text = {k: cond.get(k) for k in ("caption", "caption_mask", "text_swap", "concept",
                                     "block_edit", "resolution", "aspect_ratio")}
    if guidance_scale <= 1.0:
      return model_call(params, x, t, text)
    both = lambda a, b: None if b is None else jnp.concatenate([a, b], axis=0)
    swap = text["text_swap"]
    text = {"resolution": both(text["resolution"], text["resolution"]),
            "aspect_ratio": both(text["aspect_ratio"], text["aspect_ratio"]),
            "caption": both(cond["uncond_caption"], text["caption"]),
            "caption_mask": both(cond.get("uncond_caption_mask"), text["caption_mask"]),
            # The unconditional half asks for nothing: its scores are dropped below.
            "concept": None if text["concept"] is None else ConceptProbe(
                both(jnp.zeros_like(text["concept"].weights), text["concept"].weights)),
            "text_swap": None if swap is None else TextSwap(
                swap.block_mask, both(cond["uncond_caption"], swap.caption),
                both(cond.get("uncond_caption_mask"), swap.caption_mask)),
            "block_edit": edit_conditional_half(text["block_edit"], x.shape[0])}
    out = model_call(params, jnp.concatenate([x, x], axis=0), t, text)
    out, scores = out if isinstance(out, tuple) else (out, None)
    uncond, conditional = jnp.split(out, 2, axis=0)
    guided = uncond + guidance_scale * (conditional - uncond)
    return guided if scores is None else (guided, jnp.split(scores, 2, axis=0)[1])
  return predict


def cross_attention_predict(module, guidance_scale: float, caption_embedded: bool = False) -> Predict:
  """PixArt and SANA: CFG over a cross-attention DiT; learned-sigma channels dropped after guidance.

  The model gets the timestep times the config's timestep_scale (SANA) and, for PixArt models that
  use them, the resolution and aspect-ratio micro-conditions. predict.hoist(params, cond) gives the
  predictor of captions already embedded (caption_embedded) and cond with its captions (the
  prompt's, the negative prompt's, a TextSwap's) embedded: denoise embeds them once, before the
  loop, instead of at every step.
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
                       text_swap=text.get("text_swap"), concept=text.get("concept"),
                       block_edit=text.get("block_edit"), caption_embedded=caption_embedded, **extra)
    drop_sigma = lambda o: o[..., :cfg.in_channels] if cfg.output_channels == 2 * cfg.in_channels else o
    return (drop_sigma(out[0]), out[1]) if isinstance(out, tuple) else drop_sigma(out)

  predict = classifier_free_guidance(model_call, guidance_scale)
  if not caption_embedded and getattr(module, "embeds_captions", False):
    predict.hoist = lambda params, cond: (cross_attention_predict(module, guidance_scale, True),
                                          embed_captions(module, params, cond))
  return predict


def embed_captions(module, params, cond: dict) -> dict:
  """cond with every caption in it (the prompt's, the negative prompt's, a TextSwap's) through the
  model's caption path (module.embed_caption)."""
  embed = lambda c: module.embed_caption(params, c)
  cond = {k: embed(v) if k in ("caption", "uncond_caption") else v for k, v in cond.items()}
  swap = cond.get("text_swap")
  if isinstance(swap, TextSwap):
    cond["text_swap"] = swap._replace(caption=embed(swap.caption))
  return cond
