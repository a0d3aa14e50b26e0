"""Unlearning a Shapes concept: concept ablation (map it to its neutral phrase) or ESD.

    python train.py --config configs/shapes_unlearn.py
    python train.py --config configs/shapes_unlearn.py --config.objective=esd
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json
"""
from dit_jax.shapes.tasks import unlearn_config


def get_config():
  return unlearn_config()
