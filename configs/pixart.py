"""PixArt-alpha / PixArt-Sigma.

    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-1024-MS

`checkpoint` is a diffusers pipeline folder (transformer/, text_encoder/, ...), a diffusers
transformer folder, an original PixArt .pth file, or a Flax checkpoint from `python -m ports.convert`.
"""
import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.model = "pixart"
  config.checkpoint = ""          # required: where the weights are
  config.dtype = "bfloat16"
  config.original_overrides = ml_collections.ConfigDict({"sample_size": 128})  # .pth files only
  config.seed = 0
  return config
