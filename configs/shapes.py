"""The shipped default: localization and causal validation on the Shapes model, on a CPU.

    python localize.py --config configs/shapes.py

One concept per Shapes category, 4 prompts each, one seed, 20 sampling steps. K = 1 and 2 of 12
blocks, and at each K every K-block set is swept (12 + 66 sets): top-K's p is its exact rank among
all of them (dit_jax/verdict/exact.py), pooled over concepts in a primary test, then per category and
concept. Plus the original, the neutral prompt and top-K's reverse; sized to finish in under 5
minutes on 2 CPU cores. With one concept per category and 12 blocks, one concept's p at K = 1
cannot go below 1/12: the pooled primary test and K = 2 (p down to 1/66) are where this run can
say yes; the summary states its placebo rate and its power. configs/shapes_full.py (two concepts
per category, K = 1, 2 and 4 exact) is the fuller run.
"""
from configs.common import base_config
from dit_jax.shapes import ASSETS


def get_config():
  config = base_config("pixart", height=32, width=32, num_steps=20, guidance_scale=4.5)
  config.checkpoint = str(ASSETS)          # pipeline folder: transformer/, text_encoder/, scheduler/
  config.plugins = ("dit_jax.shapes.plugin",)   # the "shapes" judge and knowledge set
  config.dtype = "float32"
  config.max_sequence_length = 32
  config.sample.seeds = (0,)
  config.score.batch_size = 16
  config.knowledge.set = "shapes"
  config.knowledge.concepts_per_category = 1
  config.knowledge.prompts_per_concept = 4
  config.sweep.ks = (1, 2)                 # every one- and two-block set: 12 + 66, exact
  config.sweep.exact_limit = 500
  config.sweep.random_draws = 200          # only used above exact_limit (none here)
  config.sweep.reverse_draws = 0           # no random sets in reverse: "sufficient" is untested
  config.sweep.depth_draws = 0
  config.hosts.intervention_chunk = 4      # per device and call: larger vmapped batches run slower on a CPU
  config.judge.name = "shapes"
  config.judge.args = {}
  config.out_dir = "runs/localize_shapes"
  return config
