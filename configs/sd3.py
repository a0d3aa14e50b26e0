"""Stable Diffusion 3 Medium, SD3.5 Large / Medium (sampling; the localization sweep swaps the
attention's text input, as for FLUX).

    python generate.py --config configs/sd3.py --config.checkpoint=/path/to/stable-diffusion-3.5-large \
        --config.generate.prompt="a dog in the snow"
    python localize.py --config configs/sd3.py --config.checkpoint=... \
        --config.judge.args.folder=/path/to/clip-vit-base-patch32

`checkpoint` is a diffusers pipeline folder (transformer/, text_encoder/ ... text_encoder_3/,
tokenizer/ ... tokenizer_3/, vae/, scheduler/). An original single file (sd3.5_large.safetensors)
converts first: python convert.py --model sd3 ... SD3.5 model cards recommend a lower
guidance than the pipeline's 7.0 (Large: 3.5): --config.sample.guidance_scale=3.5. Concept tokens are
scored in both parts of the joint text (CLIP's 77 tokens and T5's). Localization with the pooled
CLIP vectors swapped as well, in every intervention: --config.sweep.pooled_swap=True.
"""
from configs.common import base_config


def get_config():
  # StableDiffusion3Pipeline's defaults: 28 flow-match Euler steps, guidance 7.0, T5 at 256 tokens.
  return base_config("sd3", height=1024, width=1024, num_steps=28, guidance_scale=7.0)
