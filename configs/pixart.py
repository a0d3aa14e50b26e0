"""PixArt-alpha / PixArt-Sigma.

    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-1024-MS

`checkpoint` is a diffusers pipeline folder (transformer/, text_encoder/, ...), a diffusers
transformer folder, an original PixArt .pth file, or a Flax checkpoint from `python -m ports.convert`.
"""
import os

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.model = "pixart"
  config.checkpoint = ""          # required: where the weights are
  config.dtype = "bfloat16"
  config.original_overrides = ml_collections.ConfigDict({"sample_size": 128})  # .pth files only
  config.seed = 0

  # Sampling (python -m dit_jax.generate), as diffusers' PixArtAlphaPipeline defaults.
  config.prompt = ""
  config.prompts_file = ""
  config.sample = ml_collections.ConfigDict(dict(
      num_steps=20, guidance_scale=4.5, height=1024, width=1024, seeds="0", batch_size=1,
      transformer="",                # optional Flax checkpoint replacing the folder's transformer/
      cache_dir=os.path.expanduser("~/.cache/dit_jax/prompts"), out_dir="out/generate"))
  return config
