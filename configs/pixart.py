"""PixArt-alpha / PixArt-Sigma.

    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-512x512 \
        --config.judge.args.folder=/path/to/clip-vit-base-patch32
    python generate.py --config configs/pixart.py --config.checkpoint=... --config.generate.prompt="a dog"

`checkpoint` is a diffusers pipeline folder (transformer/, text_encoder/, tokenizer/, vae/,
scheduler/). An original PixArt .pth converts first: python convert.py --model pixart ...
"""
from configs.common import base_config


def get_config():
  # PixArtAlphaPipeline's defaults: 20 DPM-Solver++ steps, guidance 4.5, T5 at 120 tokens.
  return base_config("pixart", height=512, width=512, num_steps=20, guidance_scale=4.5)
