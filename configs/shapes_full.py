"""The fuller Shapes run, the one the README's localization table comes from.

    python localize.py --config configs/shapes_full.py

As configs/shapes.py, but 10 prompts per concept (a named character has 20 distinct captions,
10 per split) and two seeds, so 20 images per intervention, and 20 random-K draws and 5 random-K
reverse runs at every K of the grid 2, 4, 6: 86 interventions per concept. Its measured run time
is in the README.
"""
from configs import shapes


def get_config():
  config = shapes.get_config()
  config.prompts_per_concept = 10
  config.seeds = (0, 1)
  config.random_draws = 20
  config.depth_draws = 20                  # depth-matched random-K: the draw-level p can reach 1/21
  config.reverse_draws = 5
  config.out_dir = "runs/localize_shapes_full"
  return config
