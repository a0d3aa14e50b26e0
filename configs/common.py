"""Defaults every model config shares: sampling (generate.py) and localization (localize.py).

The keys are grouped by the stage that reads them (docs/design.md, "Config"): the top level says
which model and where results go; config.sample how images are drawn; config.knowledge which
concepts and prompts; config.score, config.sweep, config.judge and config.verdict the localization
stages; config.hosts how the work is split over devices and processes; config.generate
generate.py's own. A stage receives its subtree, and its provenance is that subtree with its
inputs (dit_jax/localize/inputs.py), so a key's place decides which results it renews.
"""
import os

import ml_collections

ConfigDict = ml_collections.ConfigDict


def base_config(model: str, height: int, width: int, num_steps: int, guidance_scale: float):
  config = ConfigDict()
  config.model = model
  config.checkpoint = ""                   # required for real models: the diffusers pipeline folder,
                                           # or its Hub id ("PixArt-alpha/PixArt-XL-2-512x512")
  config.revision = ""                     # a Hub id's branch, tag or commit ("": main)
  config.dtype = "bfloat16"
  config.max_sequence_length = 0           # 0: the pipeline's default
  config.plugins = ()                      # modules that register judges / knowledge sets by name
  config.out_dir = f"runs/localize_{model}"
  config.set_cache = ""                    # judged sets (dit_jax/localize/setcache.py); "": <out_dir>/set_cache
  config.fresh = False                     # True: recompute results in out_dir made from other inputs
  config.score_only = False                # True: scores.json and heatmap only (a ranking for train.py), no sweep

  config.sample = ConfigDict()             # how every image is drawn (scoring, sweep, generate.py)
  config.sample.num_steps = num_steps
  config.sample.guidance_scale = guidance_scale
  config.sample.height, config.sample.width = height, width
  config.sample.seeds = (0, 1)             # the paper uses one seed; averaging over several is sounder

  # Knowledge (docs/design.md, "The method"): the concepts a run localizes and their prompts.
  config.knowledge = ConfigDict()
  config.knowledge.set = "builtin"         # "builtin", "shapes", or "lock:/path/to/LocK"
  config.knowledge.categories = ()
  config.knowledge.concepts = ()
  config.knowledge.concepts_per_category = 2
  config.knowledge.prompts_per_concept = 8
  config.knowledge.prompt_seed = 0         # which prompts a set that draws them uses (a replicate)

  config.score = ConfigDict()              # block scores on the train prompts
  config.score.localizers = ("attention",)  # every localizer that scores (attention, causal, bypass,
                                           # patching); agreement.json compares them
  config.score.batch_size = 4              # prompts per scoring batch

  config.sweep = ConfigDict()              # block interventions on the eval prompts
  config.sweep.localizer = "attention"     # dit_jax/localize/localizers/: the one whose ranking the sweep follows
  # Which attention score ranks the blocks (results.VARIANTS): "with_wo" (W_O without its bias),
  # "without_wo", or "paper" (exactly the paper's code: W_O with its bias; FLUX single blocks none).
  config.sweep.score_variant = "with_wo"
  # The K grid: counts, or fractions of the blocks. Ours: the paper's code takes one count per run,
  # K = 6 by default (--disable_k_dominant_blocks, localization_and_intervention/
  # localize_knowledge_and_intervene.py and _flux.py, github ArmanZarei/DiT-Knowledge-Localization).
  config.sweep.ks = (0.1, 0.3, 0.5)
  # The verdict ranks top-K among independent random K-sets (dit_jax/verdict/sets.py): its p-value
  # cannot go below 1 / (draws + 1), and Benjamini-Hochberg over a run's tests asks for more.
  config.sweep.random_draws = 200          # random-K sets per concept and K, drawn per concept
  config.sweep.random_overlap = True       # may a random-K set share blocks with the top-K (False: no)
  # Where C(blocks, K) <= exact_limit every K-block set is swept and p is top-K's exact rank among
  # them (dit_jax/verdict/exact.py); above it random_draws different sets are sampled. K = 1 is always swept.
  config.sweep.exact_limit = 500
  config.sweep.reverse_draws = 200         # reverse runs in the first random-K sets (the reverse's control)
  config.sweep.depth_draws = 20            # random-K sets with the top-K's depth profile (0: none)
  config.sweep.single_blocks = False
  config.sweep.withhold = "neutral"        # what selected blocks read instead: neutral|empty|removed|mean
  config.sweep.time_windows = ()           # e.g. ("early", "middle", "late"): also intervene per window
  config.sweep.pooled_swap = False         # FLUX/SD3: the sweep swaps the pooled CLIP vector too
  config.sweep.residual_swap = False       # FLUX: also run the control swap of the whole text stream
  config.sweep.seed = 0                    # the random and depth-matched K-sets drawn

  config.judge = ConfigDict()              # what says whether a concept is in an image
  config.judge.name = "clip"
  config.judge.args = ConfigDict({"folder": ""})   # a local CLIP folder

  config.verdict = ConfigDict()            # read from the judged rows at every report
  # The summary states the power to find a planted effect this size (top-K removing this much more
  # than the mean K-set): the median localized effect of the Shapes fuller run, both replicates
  # pooled (results/localize_shapes_full_both.json; tests/exact_test.py checks it).
  config.verdict.power_effect = 0.35
  config.verdict.presence_target = 0.5     # automatic K: the smallest swept K below it (summary.AUTO_K_RULE)

  # Devices and hosts (README, "What runs where"): how the work is laid out, never what it gives.
  # A process splits each sweep's interventions and each scoring batch over its devices;
  # processes split the concepts, then one merges.
  config.hosts = ConfigDict()
  config.hosts.num_devices = 0             # this process's devices to use (0: every one)
  config.hosts.fsdp = 1                    # devices per FSDP group of the weights (1: replicated)
  config.hosts.intervention_chunk = 4      # interventions per device in one compiled call
  config.hosts.distributed = False         # jax.distributed.initialize(): TPU pod slice, cluster
  config.hosts.process_count = 0           # processes splitting the concepts (0: jax's count)
  config.hosts.process_index = 0           # this one's share: concepts[process_index::process_count]
  config.hosts.merge_only = False          # reports from every concept's results on disk, no compute

  config.generate = ConfigDict()           # generate.py
  config.generate.prompt = ""
  config.generate.prompts_file = ""
  config.generate.batch_size = 4           # images per sampling call
  # Optional weights sampled in place of the pipeline's transformer/: a fine-tuning run's export,
  # <workdir>/transformer (a diffusers folder), or a dit_jax Flax checkpoint.
  config.generate.transformer = ""
  config.generate.cache_dir = os.path.expanduser("~/.cache/dit_jax/prompts")
  config.generate.out_dir = f"out/generate_{model}"
  return config

