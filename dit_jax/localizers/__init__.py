"""Localizers, looked up by name (config.localizer): each scores every block for a concept.

    scores = localizers.get("attention").score(pipe, pairs, seeds, size, batch_size)

A localizer returns a results.ScoreRecord: per-block scores, larger = the block carries more of
the concept, in the backbone's block order (config.block_names). A new
localizer is one file here defining a Localizer and one line in REGISTRY.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dit_jax import registry

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
  return registry.lookup(REGISTRY, name, "localizer")
