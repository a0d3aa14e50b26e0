"""Localization and causal validation of knowledge in DiT blocks.

    python localize.py --config configs/pixart.py --config.checkpoint=/path/to/weights

Today this loads and checks the backbone named by the config (the first step of the data path:
config -> checkpoint loader -> Flax module); scoring, interventions and reports are issue #7.
"""
from absl import app, flags
from ml_collections import config_flags

from dit_jax import entry

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<model>.py", lock_config=True)


def main(argv):
  del argv
  config = _CONFIG.value
  module, params = entry.load_backbone(config)
  print(entry.describe(module, params))
  print("localization is not implemented yet (issue #7): only the backbone was loaded and checked.")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
