"""Personalization of a concept the model knows to a new look (DreamBooth with prior preservation):
captions that name the concept, renders that draw another concept of its category in its place.

    python train.py --config configs/shapes_relook.py --config.blocks=2,3,4
    python train.py --config configs/shapes_relook.py --config.category=colour \
        --config.concept=red --config.target=blue
"""
from dit_jax.shapes.tasks import relook_config


def get_config():
  return relook_config()
