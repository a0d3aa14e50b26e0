"""Training: pretraining of the Shapes model, and localized fine-tuning (dit_jax.train.job.run).

    python train.py --config configs/shapes_pretrain.py
    python train.py --config configs/shapes_personalize.py --config.blocks=2,5,9
    python train.py --config configs/shapes_unlearn.py --config.blocks=runs/localize_shapes/scores.json
    python train.py --config configs/shapes_pretrain.py --config.export_dir=/tmp/now/transformer \
        --export_checkpoint=latest     # the weights of a run that is still training, as diffusers

Works in config.workdir: resumes from its latest checkpoint, writes metrics.jsonl and loss.png there;
a non-finite loss stops the run with a message and leaves the last good checkpoint in place.
"""
from absl import app, flags, logging
from ml_collections import config_flags

from dit_jax import cli
from dit_jax.train import job as train

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<job>.py", lock_config=True)
_EXPORT = flags.DEFINE_string(
    "export_checkpoint", None, "'latest' or a step: export that checkpoint of config.workdir into "
    "config.export_dir (as the finished run would be) and exit, without training")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
  config = _CONFIG.value
  if _EXPORT.value is None:
    train.run(config, config.workdir)
  elif _EXPORT.value == "latest" or _EXPORT.value.isdigit():
    train.export_checkpoint(config, config.workdir,
                            None if _EXPORT.value == "latest" else int(_EXPORT.value))
  else:
    raise app.UsageError(f"--export_checkpoint={_EXPORT.value!r}: give 'latest' or a step number")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_cli(main)
