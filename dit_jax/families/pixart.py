"""PixArt-alpha / PixArt-Sigma: diffusers folders and the original PixArt .pth layout."""
from __future__ import annotations


import jax.numpy as jnp

from dit_jax.models.pixart import PixArtConfig, PixArtTransformer
from dit_jax.models import interventions
from dit_jax.diffusion import denoise, text
from dit_jax.families import Family
from ports import pixart as pixart_port


def example_inputs(config: PixArtConfig, batch: int = 1):
  p = config.patch_size
  inputs = (jnp.zeros((batch, 2 * p, 2 * p, config.in_channels)), jnp.zeros((batch,)),
            jnp.zeros((batch, 3, config.caption_channels or config.inner_dim)), None)
  if config.additional_conditions:
    inputs += (jnp.zeros((batch, 2)), jnp.zeros((batch, 1)))
  return inputs


FAMILY = Family(
    name="pixart", title="PixArt", config_cls=PixArtConfig, module_cls=PixArtTransformer,
    diffusers_class="PixArtTransformer2DModel", example_inputs=example_inputs,
    from_original=pixart_port.from_original,
    pipeline_class="PixArtAlphaPipeline", text_components=("tokenizer", "text_encoder"),
    max_sequence_length=120, encode_prompts=text.encode_cross_attention,
    predictor=denoise.cross_attention_predict, intervene=interventions.cross_attention_swap,
    published="PixArt weights are published on Hugging Face as PixArt-alpha/PixArt-XL-2-1024-MS "
              "(diffusers folder) and PixArt-alpha/PixArt-alpha (original .pth files); PixArt-Sigma "
              "as PixArt-alpha/PixArt-Sigma-XL-2-1024-MS.")
