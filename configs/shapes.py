"""The shipped default: localization and causal validation on the Shapes model, on a CPU.

    python localize.py --config configs/shapes.py

One concept per Shapes category, 6 prompts each, one seed, 20 sampling steps; the K grid 2, 4, 6
of 12 blocks, each with top-K, bottom-K, 6 random-K draws, 6 depth-matched random-K draws, the
reverse and 2 random-K reverse runs, plus the original and the neutral prompt: 53 interventions
per concept, sized to finish in under 5 minutes on 2 shared CPU cores (README, "The Shapes
world"). Six draws make a rough control (the draw-level p cannot go below 1/7); configs/shapes_full.py
is the run the README's table comes from.
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
  config.prompts_per_concept = 6
  config.ks = (2, 4, 6)                    # 0..half of the 12 blocks in steps of 2
  config.random_draws = 6
  config.reverse_draws = 2
  config.depth_draws = 6
  config.intervention_chunk = 4           # per compiled call: larger vmapped batches run slower on a CPU
  config.judge = "shapes"
  config.judge_args = {}
  config.out_dir = "runs/localize_shapes"
  return config
