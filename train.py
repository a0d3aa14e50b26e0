"""Training: pretraining of the Shapes model, and localized fine-tuning (dit_jax.jobs.train.run).

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json

Works in config.workdir: resumes from its latest checkpoint, writes metrics.jsonl and loss.png there;
a non-finite loss stops the run with a message and leaves the last good checkpoint in place.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from dit_jax.jobs import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<job>.py", lock_config=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
  train.run(_CONFIG.value, _CONFIG.value.workdir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
