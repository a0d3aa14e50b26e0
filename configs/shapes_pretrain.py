"""Pretraining the Shapes model: a small PixArt on 32x32 pixels of the Shapes world, with the one
generic trainer (data source "shapes_scenes" of the Shapes plugin).

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_pretrain.py --config.steps=200 --config.workdir=/tmp/run

The run resumes from its latest checkpoint in `workdir`. It trains in its own pipeline folder,
<workdir>/pipeline (the shipped text encoder, tokenizer and judge are copied there), and at the end
exports the EMA weights into <workdir>/pipeline/transformer: the shipped model
(dit_jax/shapes/assets) is never written. Use the result with
`python localize.py --config configs/shapes.py --config.checkpoint=<workdir>/pipeline`.
"""
from dit_jax.shapes.tasks import pretrain_config


def get_config():
  return pretrain_config()
