"""Localizers, looked up by name (config.localizer): each scores every block for a concept.

    scores = localizers.get("attention").score(pipe, pairs, seeds, size, batch_size)

A localizer returns a results.ScoreRecord: per-block scores, larger = the block carries more of
the concept, in the backbone's block order (config.block_names). A new
localizer is one file here defining a Localizer and one line in REGISTRY.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

# name -> "module:attribute" of its Localizer. The one line a new localizer adds.
REGISTRY = {
    "attention": "dit_jax.localizers.attention:ATTENTION",
}


@dataclasses.dataclass(frozen=True)
class Localizer:
  name: str
  # score(pipe, pairs, seeds, size, batch_size) -> results.ScoreRecord
  score: Callable[..., dict]


def names() -> list[str]:
  return sorted(REGISTRY)


def get(name: str) -> Localizer:
  if name not in REGISTRY:
    raise ValueError(f"unknown localizer {name!r}; choose from {names()}")
  module, attribute = REGISTRY[name].split(":")
  return getattr(importlib.import_module(module), attribute)
