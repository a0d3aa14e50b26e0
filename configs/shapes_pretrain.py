"""Pretraining the Shapes model: a small PixArt on 32x32 pixels of the Shapes world, with the one
generic trainer (data source "shapes_scenes" of the Shapes plugin).

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_pretrain.py --config.steps=200 --config.workdir=/tmp/run

The run resumes from its latest checkpoint in `workdir`; at the end the EMA weights are exported as
a diffusers folder into `export_dir` (dit_jax/shapes/assets/transformer).
"""
from dit_jax.shapes.tasks import pretrain_config


def get_config():
  return pretrain_config()
