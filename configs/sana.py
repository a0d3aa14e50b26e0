"""SANA (600M / 1600M).

    python localize.py --config configs/sana.py --config.checkpoint=/path/to/Sana_1600M_1024px_diffusers \
        --config.judge.args.folder=/path/to/clip-vit-base-patch32
"""
from configs.common import base_config


def get_config():
  # SanaPipeline's defaults: 20 flow DPM-Solver steps, guidance 4.5, Gemma at 300 tokens.
  return base_config("sana", height=1024, width=1024, num_steps=20, guidance_scale=4.5)
