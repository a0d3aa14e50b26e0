"""Defaults every model config shares: sampling (generate.py) and localization (localize.py)."""
import os

import ml_collections


def base_config(model: str, height: int, width: int, num_steps: int, guidance_scale: float):
  config = ml_collections.ConfigDict()
  config.model = model
  config.checkpoint = ""                   # required for real models: the diffusers pipeline folder,
                                           # or its Hub id ("PixArt-alpha/PixArt-XL-2-512x512")
  config.revision = ""                     # a Hub id's branch, tag or commit ("": main)
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
  config.prompt_seed = 0                   # which prompts a set that draws them uses (a replicate)
  config.localizer = "attention"           # dit_jax/localize/localizers/: the one that ranks blocks for the sweep
  config.localizers = ("attention",)       # every localizer that scores (attention, causal, bypass,
                                           # patching); agreement.json compares them
  # Which attention score ranks the blocks (results.VARIANTS): "with_wo" (W_O without its bias),
  # "without_wo", or "paper" (exactly the paper's code: W_O with its bias; FLUX single blocks none).
  config.score_variant = "with_wo"
  # The K grid: counts, or fractions of the blocks. Ours: the paper's code takes one count per run,
  # K = 6 by default (--disable_k_dominant_blocks, localization_and_intervention/
  # localize_knowledge_and_intervene.py and _flux.py, github ArmanZarei/DiT-Knowledge-Localization).
  config.ks = (0.1, 0.3, 0.5)
  # The verdict ranks top-K among independent random K-sets (dit_jax/verdict/sets.py): its p-value
  # cannot go below 1 / (draws + 1), and Benjamini-Hochberg over a run's tests asks for more.
  config.random_draws = 200                # random-K sets per concept and K, drawn per concept
  config.random_overlap = True             # may a random-K set share blocks with the top-K (False: no)
  # Where C(blocks, K) <= exact_limit every K-block set is swept and p is top-K's exact rank among
  # them (dit_jax/verdict/exact.py); above it random_draws different sets are sampled. K = 1 is always swept.
  config.exact_limit = 500
  # The summary states the power to find a planted effect this size (top-K removing this much more
  # than the mean K-set): the median localized effect of the Shapes full table
  # (results/localize_shapes_full.json; tests/exact_test.py checks it).
  config.power_effect = 0.47
  config.reverse_draws = 200               # reverse runs in the first random-K sets (the reverse's control)
  config.placebo = False                   # True: a random ranking per concept replaces the localizer's
  config.score_only = False                # True: scores.json and heatmap only (a ranking for train.py), no sweep
  config.depth_draws = 20                  # random-K sets with the top-K's depth profile (0: none)
  config.single_blocks = False
  config.intervention_chunk = 4           # interventions per device in one compiled call
  config.withhold = "neutral"              # what selected blocks read instead: neutral|empty|removed|mean
  config.time_windows = ()                 # e.g. ("early", "middle", "late"): also intervene per window
  config.pooled_swap = False               # FLUX/SD3: the sweep swaps the pooled CLIP vector too
  config.residual_swap = False             # FLUX: also run the control swap of the whole text stream
  config.judge = "clip"
  config.judge_args = ml_collections.ConfigDict({"folder": ""})   # a local CLIP folder
  config.presence_target = 0.5            # automatic K: the smallest swept K below it (analysis.AUTO_K_RULE)
  config.out_dir = f"runs/localize_{model}"
  config.set_cache = ""                    # judged sets (dit_jax/localize/setcache.py); "": <out_dir>/set_cache
  config.fresh = False                     # True: recompute results in out_dir made from other inputs

  # Devices and hosts (README, "What runs where"). A process splits each sweep's interventions and
  # each scoring batch over its devices; processes split the concepts, then one merges.
  config.num_devices = 0                   # this process's devices to use (0: every one)
  config.fsdp = 1                          # devices per FSDP group of the weights (1: replicated)
  config.distributed = False               # jax.distributed.initialize(): TPU pod slice, cluster
  config.process_count = 0                 # processes splitting the concepts (0: jax's count)
  config.process_index = 0                 # this one's share: concepts[process_index::process_count]
  config.merge_only = False                # reports from every concept's results on disk, no compute

  # generate.py
  config.prompt = ""
  config.prompts_file = ""
  # Optional weights sampled in place of the pipeline's transformer/: a fine-tuning run's export,
  # <workdir>/transformer (a diffusers folder), or a dit_jax Flax checkpoint.
  config.transformer = ""
  config.cache_dir = os.path.expanduser("~/.cache/dit_jax/prompts")
  config.generate_dir = f"out/generate_{model}"
  return config
