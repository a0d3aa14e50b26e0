"""The fuller Shapes run, the one the README's localization table comes from.

    python localize.py --config configs/shapes_full.py

As configs/shapes.py, but two concepts per category (12 concepts), 8 prompts per concept and two
seeds (16 units per concept, 32 per category), 20 random-K and 20 depth-matched random-K draws
(so the draw-level p can reach 1/21) and 3 random-K reverse runs at every K of the grid 2, 4, 6:
106 interventions per concept. Every localizer scores (attention, causal, bypass, patching), so
agreement.json compares them per category. Its measured run time is in the README.
"""
from configs import shapes


def get_config():
  config = shapes.get_config()
  config.concepts_per_category = 2
  config.prompts_per_concept = 8
  config.seeds = (0, 1)
  config.random_draws = 20
  config.depth_draws = 20
  config.reverse_draws = 3
  config.localizers = ("attention", "causal", "bypass", "patching")
  config.out_dir = "runs/localize_shapes_full"
  return config
