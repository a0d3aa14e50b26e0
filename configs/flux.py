"""FLUX.1-dev / FLUX.1-schnell (sampling; the localization sweep swaps the attention's text input).

    python -m dit_jax.generate --config configs/flux.py --config.checkpoint=/path/to/FLUX.1-dev \
        --config.prompt="a dog in the snow"

For schnell: --config.num_steps=4 --config.guidance_scale=0. Localization with the pooled CLIP vector
swapped as well (its rows are reported apart, as "top+pooled", ...): --config.pooled_swap=True.
The sweep's intervention is the paper's: selected blocks' attention reads the neutral trajectory's
text input to it. The control that replaces the whole text stream from the selected blocks onward
(not the paper's; rows "top+residual", ...): --config.residual_swap=True.
"""
from configs.common import base_config


def get_config():
  # FluxPipeline's defaults for dev: 28 steps, distilled guidance 3.5, T5 at 512 tokens.
  return base_config("flux", height=1024, width=1024, num_steps=28, guidance_scale=3.5)
