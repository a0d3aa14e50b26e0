"""Unlearning on SANA (Sana_1600M_1024px_diffusers, 600M): ESD (or concept ablation) of a concept in the blocks that hold it.

    python train.py --config configs/sana_unlearn.py --config.checkpoint=/path/to/pipeline \
        --config.concept="vincent van gogh" --config.blocks=runs/localize_sana/scores.json --config.k=4
"""
from dit_jax.train.defaults import train_config, unlearn


def get_config():
  return unlearn(train_config("sana", "esd", resolution=1024, num_steps=20, guidance_scale=4.5))
