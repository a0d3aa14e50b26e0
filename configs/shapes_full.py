"""The fuller Shapes run, the one the README's localization table comes from.

    python localize.py --config configs/shapes_full.py

As configs/shapes.py (K = 2 and 4 of 12 blocks, 4 prompts and one seed per concept), but two
concepts per category (12 concepts; 8 units per category), 200 independent random
K-sets per concept and K (the verdict's null, dit_jax/verdict.py: its p can reach 1/201), 50 of
them also run in reverse (p down to 1/51), and 10 depth-matched draws (a secondary control).
Repeated sets are sampled once: about 340 distinct interventions per concept. Only the attention
localizer scores (the sweep is the cost); the localizers' agreement on this model comes from the
earlier run with every localizer (benchmarks/results/localize_shapes_full_20draws.json, the same
weights). Its measured run time is in the README.
"""
from configs import shapes


def get_config():
  config = shapes.get_config()
  config.concepts_per_category = 2
  config.random_draws = 200
  config.depth_draws = 10
  config.reverse_draws = 50
  config.out_dir = "runs/localize_shapes_full"
  return config
