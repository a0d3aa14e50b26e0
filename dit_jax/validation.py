"""Config checks an entry point runs before any work, so an empty input is named at once instead of
surfacing as an IndexError after minutes of scoring, or as a run that silently does nothing."""
from __future__ import annotations

# What to pass instead, per config field.
EXAMPLES = {"seeds": "(0,)", "ks": "(4,)"}


def require_nonempty(config, *names: str) -> None:
  for name in names:
    if not tuple(config[name]):
      raise ValueError(f"config.{name} is empty: give at least one, e.g. "
                       f"--config.{name}=\"{EXAMPLES.get(name, '(...)')}\"")


def validate_localize_config(config) -> None:
  """localize.py: scores are averaged over the seeds, and the sweep needs a K (the first also
  marks the heatmap)."""
  require_nonempty(config, "seeds", "ks")


def validate_generate_config(config) -> None:
  """generate.py: every prompt is drawn once per seed, so no seeds would write no image."""
  require_nonempty(config, "seeds")
