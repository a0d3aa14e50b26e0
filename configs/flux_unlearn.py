"""Unlearning on FLUX.1-dev / schnell: ESD (or concept ablation) of a concept in the blocks that hold it.

    python train.py --config configs/flux_unlearn.py --config.checkpoint=/path/to/pipeline \
        --config.concept="vincent van gogh" --config.blocks=runs/localize_flux/scores.json --config.k=4
"""
from dit_jax.train.defaults import train_config, unlearn


def get_config():
  return unlearn(train_config("flux", "esd", resolution=1024, num_steps=28, guidance_scale=3.5))
