"""Training the Shapes model on from a pipeline folder's weights (the shipped model by default):
the pretraining recipe with a fresh optimizer, learning-rate schedule and EMA.

    cp -r dit_jax/shapes/assets runs/base12500          # the weights to start from
    python train.py --config configs/shapes_continue.py --config.checkpoint=runs/base12500 \
        --config.export_dir=runs/shapes_continue/pipeline/transformer

The run resumes from its latest checkpoint in `workdir`; at the end the EMA weights are exported
into `export_dir`.
"""
from dit_jax.shapes.tasks import continue_config


def get_config():
  return continue_config()
