"""Localizers, looked up by name (config.localizers; config.localizer ranks the blocks for the sweep):
each scores every block for a concept (docs/design.md, "Localizers").

    record = localizers.get("causal").score(pipe, pairs, seeds, size, batch_size, judge=judge)

A localizer returns a records.ScoreRecord: per-block scores, larger = the block carries more of
the concept, in the backbone's block order (config.block_names). The attention localizer gives
three variants (variants.VARIANTS: with W_O, without, and as the paper's code computes it); a
localizer with one score gives it under each, so whatever ranks by config.score_variant ranks by
it. Intervention localizers judge images and need the run's judge; the others ignore it. A new localizer is one file here defining a Localizer and one line in
REGISTRY.

    attention  the paper's attention contribution of the concept's tokens (with / without W_O, paper)
    causal     presence drop when only block l reads the neutral text
    bypass     presence drop (and image change) when block l's residual update is skipped
    patching   presence regained when the neutral run takes block l's output from the concept run
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from dit_jax import registry

# name -> "module:attribute" of its Localizer. The one line a new localizer adds.
REGISTRY = registry.Registry("localizer", {
    "attention": "dit_jax.localize.localizers.attention:ATTENTION",
    "causal": "dit_jax.localize.localizers.causal:CAUSAL",
    "bypass": "dit_jax.localize.localizers.bypass:BYPASS",
    "patching": "dit_jax.localize.localizers.patching:PATCHING",
})


@dataclasses.dataclass(frozen=True)
class Localizer:
  name: str
  # score(pipe, pairs, seeds, size, batch_size, judge=None, chunk=4) -> records.ScoreRecord;
  # chunk: interventions per compiled, vmapped call (config.intervention_chunk).
  score: Callable[..., dict]
  # The ScoreRecord variants that carry scores of their own (the others repeat the first).
  variants: tuple[str, ...] = ("with_wo",)
  needs_judge: bool = False   # it judges images: its scores depend on the judge


names, get = REGISTRY.names, REGISTRY.get   # get(name) -> Localizer; an unknown name lists the known ones


def named_scores(name: str, record: dict) -> dict[str, list[float]]:
  """label -> per-block scores of a stored record: "attention:with_wo", "attention:without_wo",
  "attention:paper" for a localizer with several variants (those the record has: one written
  before "paper" existed has two), the bare name for one with a single score."""
  variants = get(name).variants
  if len(variants) == 1:
    return {name: record[variants[0]]}
  return {f"{name}:{v}": record[v] for v in variants if record.get(v)}
