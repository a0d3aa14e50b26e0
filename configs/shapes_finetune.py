"""Shared defaults of localized fine-tuning on the Shapes model (personalization, unlearning)."""
import ml_collections


def finetune_config(objective: str, concept: str, workdir: str):
  config = ml_collections.ConfigDict()
  config.task = "finetune_shapes"
  config.objective = objective
  config.pipeline_folder = "assets/shapes"
  config.concept = concept
  # Which blocks train: "all", an explicit list ("2,5,9"), or a localize.py scores.json, from which
  # the top-k blocks of `concept` are taken.
  config.blocks = "all"
  config.k = 4
  config.lora_rank = 0               # > 0: LoRA of this rank on the selected blocks' attention
  config.lora_alpha = 8.0
  config.workdir = workdir
  config.export_dir = ""             # "": <workdir>/transformer
  config.steps = 300
  config.batch_size = 16
  config.learning_rate = 3e-4
  config.warmup_steps = 20
  config.seed = 0
  config.log_every = 10
  config.checkpoint_every = 100
  config.max_minutes = 0.0
  return config
