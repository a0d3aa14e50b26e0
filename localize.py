"""Localization and causal validation of knowledge in DiT blocks (dit_jax.localize.job.run).

    python localize.py --config configs/shapes.py                 # the shipped Shapes model, CPU
    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/PixArt-XL-2-512x512

Results go to config.out_dir; a rerun resumes what is already there (and says so). Ctrl-C keeps
every finished concept's results and prints the command that resumes them; run.json's seconds add
up the compute time of every run that made the results.
"""
from absl import flags, logging
from ml_collections import config_flags

from dit_jax import cli, sharding
from dit_jax.localize import job as localize

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<model>.py", lock_config=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  # Before anything computes: the job splits its sweeps over every device (config.hosts).
  sharding.one_cpu_device_per_core()
  localize.run(_CONFIG.value, _CONFIG.value.out_dir)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run_cli(main)
