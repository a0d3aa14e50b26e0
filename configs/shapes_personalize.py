"""Personalization (DreamBooth with prior preservation): teach the Shapes model a new character
under a reserved name (its look: dit_jax.shapes.world.planted_look).

    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
"""
from configs.shapes_finetune import finetune_config


def get_config():
  config = finetune_config("personalization", concept="quib", workdir="runs/personalize_quib")
  config.num_images = 8            # renders of the subject
  config.num_prior_images = 64     # the frozen model's own "a character ..." images
  config.prior_weight = 1.0
  return config
