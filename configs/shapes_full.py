"""The fuller Shapes run, the one the README's localization table comes from, in two replicates.

    python localize.py --config configs/shapes_full.py            # replicate 1
    python localize.py --config configs/shapes_full.py:2          # replicate 2: other noise, other prompts

As configs/shapes.py (4 prompts and one seed per concept, every K-set swept: the exact verdict of
dit_jax/verdict/exact.py), but two concepts per category (12 concepts; a category's two concepts pooled,
so one-block sets can decide per category: p down to 1/144) and K = 1, 2 and 4 (12 + 66 + 495
sets per concept). Replicate 2 draws another noise seed and other prompts (prompt_seed 2: train
prompts from seed 2, eval prompts from seed 3; replicate 1 uses 0 and 1). No random sets in
reverse ("sufficient" untested; top-K's reverse is reported). Each judged set is cached as soon
as it is judged (<out_dir>/set_cache, dit_jax/localize/setcache.py): a stopped run resumes set by set.
"""
from configs import shapes


def get_config(replicate: str = "1"):
  if replicate not in ("1", "2"):
    raise ValueError(f"configs/shapes_full.py:{replicate}: replicates are 1 and 2")
  config = shapes.get_config()
  config.knowledge.concepts_per_category = 2
  config.sweep.ks = (1, 2, 4)
  config.sweep.depth_draws = 0
  config.sweep.reverse_draws = 0
  config.out_dir = "runs/localize_shapes_full" + ("" if replicate == "1" else "_r2")
  if replicate == "2":
    config.sample.seeds = (1,)
    config.knowledge.prompt_seed = 2
  return config
