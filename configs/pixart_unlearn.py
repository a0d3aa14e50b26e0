"""Unlearning on PixArt-alpha (PixArt-XL-2-512x512) / PixArt-Sigma: ESD (or concept ablation) of a concept in the blocks that hold it.

    python train.py --config configs/pixart_unlearn.py --config.checkpoint=/path/to/pipeline \
        --config.concept="vincent van gogh" --config.blocks=runs/localize_pixart/scores.json --config.k=4
"""
from dit_jax.train.defaults import train_config, unlearn


def get_config():
  return unlearn(train_config("pixart", "esd", resolution=512, num_steps=20, guidance_scale=4.5))
