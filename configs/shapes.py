"""The shipped default: localization and causal validation on the Shapes model, on a CPU.

    python localize.py --config configs/shapes.py

One concept per Shapes category, 4 prompts each, one seed, 20 sampling steps; K = 2 and 4 of 12
blocks, each with top-K, bottom-K, 30 independent random K-sets (the verdict's null,
dit_jax/verdict.py) and top-K's reverse, plus the original and the neutral prompt: about 60
distinct interventions per concept (repeated sets are sampled once), sized to finish in under 5
minutes on 2 shared CPU cores (README, "The Shapes world"). Fewer images and more draws than before
the set-level verdict: with 30 sets its p cannot go below 1/31, so this run can say "localized" only
where most of its tests agree (Benjamini-Hochberg). No random sets run in reverse: below 20 of them
the reverse test's p cannot go below 0.05, so they would cost a quarter of the run and decide nothing
("sufficient" is left untested; the reverse top-K is still reported). configs/shapes_full.py, with
200 sets and 50 in reverse, is the run the README's table comes from. --config.placebo=True
replaces each concept's ranking by a random one (benchmarks/placebo.py measures the
false-positive rate with it).
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
  config.prompts_per_concept = 4
  config.ks = (2, 4)                       # a sixth and a third of the 12 blocks
  config.random_draws = 30
  config.reverse_draws = 0                 # see the docstring: 1..19 could never say "sufficient"
  config.depth_draws = 0
  config.intervention_chunk = 4           # per device and call: larger vmapped batches run slower on a CPU
  config.judge = "shapes"
  config.judge_args = {}
  config.out_dir = "runs/localize_shapes"
  return config
