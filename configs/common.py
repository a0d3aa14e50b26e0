"""Defaults every model config shares: sampling (generate.py) and localization (localize.py)."""
import os

import ml_collections


def base_config(model: str, height: int, width: int, num_steps: int, guidance_scale: float):
  config = ml_collections.ConfigDict()
  config.model = model
  config.checkpoint = ""                   # required for real models: the diffusers pipeline folder
  config.dtype = "bfloat16"
  config.max_sequence_length = 0           # 0: the pipeline's default
  config.plugins = ()                      # modules that register judges / knowledge sets by name

  # Sampling.
  config.num_steps = num_steps
  config.guidance_scale = guidance_scale
  config.height, config.width = height, width
  config.seeds = (0, 1)                    # the paper uses one seed; averaging over several is sounder
  config.seed = 0
  config.batch_size = 4

  # Knowledge and localization (docs/design.md, "The method").
  config.knowledge = "builtin"             # "builtin", "shapes", or "lock:/path/to/LocK"
  config.categories = ()
  config.concepts = ()
  config.concepts_per_category = 2
  config.prompts_per_concept = 8
  config.localizer = "attention"           # dit_jax/localizers/: the one that ranks blocks for the sweep
  config.localizers = ("attention",)       # every localizer that scores (attention, causal, bypass,
                                           # patching); agreement.json compares them
  config.score_variant = "with_wo"
  config.ks = (0.1, 0.3, 0.5)              # the K grid: counts, or fractions of the blocks (the paper's)
  config.random_draws = 20                 # random-K sets per concept and K, drawn per concept
  config.random_overlap = True             # may a random-K set share blocks with the top-K (False: no)
  config.reverse_draws = 20                # reverse runs in the first random-K sets (the reverse's control)
  config.depth_draws = 20                  # random-K sets with the top-K's depth profile (0: none)
  config.single_blocks = False
  config.intervention_chunk = 4
  config.withhold = "neutral"              # what selected blocks read instead: neutral|empty|removed|mean
  config.time_windows = ()                 # e.g. ("early", "middle", "late"): also intervene per window
  config.pooled_swap = False               # FLUX: also run the sweep with the pooled CLIP vector swapped
  config.residual_swap = False             # FLUX: also run the control swap of the whole text stream
  config.judge = "clip"
  config.judge_args = ml_collections.ConfigDict({"folder": ""})   # a local CLIP folder
  config.presence_target = 0.5            # automatic K: the smallest swept K below it (analysis.AUTO_K_RULE)
  config.out_dir = f"runs/localize_{model}"
  config.fresh = False                     # True: recompute results in out_dir made from other inputs

  # generate.py
  config.prompt = ""
  config.prompts_file = ""
  config.transformer = ""                  # optional Flax checkpoint replacing transformer/
  config.cache_dir = os.path.expanduser("~/.cache/dit_jax/prompts")
  config.generate_dir = f"out/generate_{model}"
  return config
