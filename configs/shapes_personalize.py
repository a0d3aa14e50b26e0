"""Personalization (DreamBooth with prior preservation): teach the Shapes model a new character
under a reserved name (its look: dit_jax.shapes.world.planted_look).

    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
"""
from dit_jax.shapes.tasks import personalize_config


def get_config():
  return personalize_config()
