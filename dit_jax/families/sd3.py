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

import jax.numpy as jnp

from ports.checkpoints import torch_to_numpy
from dit_jax.families import Family
from dit_jax.families.flux import calculate_shift, text_stream_swap
from dit_jax.models.interventions import ConceptProbe, TextAttentionSwap, edit_conditional_half
from dit_jax.models.sd3 import SD3Config, SD3Transformer
from dit_jax.diffusion.denoise import Predict
from ports import sd3 as sd3_port


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
    from_original=sd3_port.from_original,
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
