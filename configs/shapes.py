"""The shipped default: localization and causal validation on the Shapes model, on a CPU.

    python localize.py --config configs/shapes.py

One concept per Shapes category, 8 prompts each, one seed, 20 sampling steps, K = 4 of 12 blocks,
5 random-K draws: a few minutes on 2 CPU cores.
"""
from configs.common import base_config
from dit_jax.shapes import ASSETS


def get_config():
  config = base_config("pixart", height=32, width=32, num_steps=20, guidance_scale=4.5)
  config.checkpoint = str(ASSETS)          # pipeline folder: transformer/, text_encoder/, scheduler/
  config.plugins = ("dit_jax.shapes.plugin",)   # the "shapes" judge and knowledge set
  config.dtype = "float32"
  config.max_sequence_length = 32
  config.seeds = (0,)
  config.batch_size = 16
  config.knowledge = "shapes"
  config.concepts_per_category = 1
  config.ks = (4,)
  config.intervention_chunk = 8
  config.judge = "shapes"
  config.judge_args = {}
  config.out_dir = "runs/localize_shapes"
  return config
