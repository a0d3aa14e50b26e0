"""SANA / SANA-1.5 / SANA-Sprint: diffusers folders and the original SANA .pth layout."""
from __future__ import annotations


import jax.numpy as jnp

from dit_jax.models.sana import SanaConfig, SanaTransformer
from dit_jax.models import interventions
from dit_jax.diffusion import denoise, text
from dit_jax.families import Family
from ports import sana as sana_port


def example_inputs(config: SanaConfig, batch: int = 1):
  p = config.patch_size
  guidance = jnp.zeros((batch,)) if config.guidance_embeds else None
  return (jnp.zeros((batch, 2 * p, 2 * p, config.in_channels)), jnp.zeros((batch,)),
          jnp.zeros((batch, 3, config.caption_channels)), None, guidance)


def sana_encode_kwargs(pipeline_class: str) -> dict:
  """SanaPipeline prefixes prompts with its "complex human instruction" (the pipeline's default)."""
  return {"complex_human_instruction": text.pipeline_default(pipeline_class,
                                                             "complex_human_instruction")}


FAMILY = Family(
    name="sana", title="SANA", config_cls=SanaConfig, module_cls=SanaTransformer,
    diffusers_class="SanaTransformer2DModel", example_inputs=example_inputs,
    from_original=sana_port.from_original,
    pipeline_class="SanaPipeline", text_components=("tokenizer", "text_encoder"),
    max_sequence_length=300, encode_kwargs=sana_encode_kwargs, encode_prompts=text.encode_cross_attention,
    predictor=denoise.cross_attention_predict, intervene=interventions.cross_attention_swap,
    published="SANA weights: Efficient-Large-Model/Sana_1600M_1024px_diffusers (diffusers) or the "
              "original .pth on Hugging Face (e.g. Efficient-Large-Model/Sana_1600M_1024px).")
