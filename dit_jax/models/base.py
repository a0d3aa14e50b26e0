"""What every backbone config shares: it mirrors a diffusers config.json, both ways."""
from __future__ import annotations

import dataclasses
from typing import ClassVar


class DiffusersConfig:
  """Mixin for the frozen config dataclasses of the backbones.

  Fields carry diffusers' names, so a config.json maps onto them directly (unknown keys such as
  "_class_name" are skipped). FIXED lists diffusers settings the port implements with one value
  only: another value is refused rather than silently computed differently, and the value is
  written back on export.
  """
  FIXED: ClassVar[dict] = {}

  @property
  def inner_dim(self) -> int:
    return self.num_attention_heads * self.attention_head_dim

  @property
  def output_channels(self) -> int:
    return self.out_channels or self.in_channels

  # Blocks, numbered as localization ranks them and fine-tuning selects them (docs/design.md,
  # "Blocks"). A backbone whose blocks are not transformer_blocks.0..num_layers-1 overrides these.
  @property
  def num_blocks(self) -> int:
    return len(self.block_names)

  @property
  def block_names(self) -> list[str]:
    """The parameter prefix of each block, in block order."""
    return [f"transformer_blocks.{i}" for i in range(self.num_layers)]

  @property
  def block_labels(self) -> list[str]:
    """How reports and block selections name each block."""
    return [str(i) for i in range(self.num_blocks)]

  @classmethod
  def from_diffusers(cls, config: dict):
    for key, expected in cls.FIXED.items():
      if key in config and config[key] != expected:
        raise ValueError(f"{cls.__name__}: {key}={config[key]!r} is not supported (only {expected!r})")
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in config.items() if k in fields})

  def to_diffusers(self) -> dict:
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
    return {**out, **self.FIXED}
