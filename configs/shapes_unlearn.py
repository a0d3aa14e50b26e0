"""Unlearning a Shapes concept: concept ablation (map it to its neutral phrase) or ESD.

    python train.py --config configs/shapes_unlearn.py
    python train.py --config configs/shapes_unlearn.py --config.objective=esd
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json
"""
from configs.shapes_finetune import finetune_config


def get_config():
  config = finetune_config("ablation", concept="zork", workdir="runs/unlearn_zork")
  config.category = "character"
  config.num_images = 64           # renders of scenes that name the concept
  return config
