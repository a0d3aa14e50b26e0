"""The attention score's variants (docs/design.md, "The method"): with W_O, without, and as the paper's
code computes it; a stored score record holds one list of per-block scores per variant."""
from __future__ import annotations


VARIANTS = ("with_wo", "without_wo", "paper")


# What each variant is, in a few words, for plot titles and tables.
DESCRIPTIONS = {
    "with_wo": "with W_O, no bias",
    "without_wo": "without W_O",
    "paper": "the paper's code: W_O with bias; FLUX single blocks without W_O",
}


def variant_index(variant: str) -> int:
  """The position of `variant` on the last axis of every score array."""
  if variant not in VARIANTS:
    raise ValueError(f"score variant {variant!r}: use one of {VARIANTS}")
  return VARIANTS.index(variant)


def stored_scores(record: dict, variant: str) -> list[float]:
  """The per-block `variant` scores of a stored record (a ScoreRecord dict, an entry of
  scores.json). A record written before the variant existed has none: that is an error naming the
  way out, never an empty ranking."""
  variant_index(variant)
  values = record.get(variant)
  if not values:
    present = [v for v in VARIANTS if record.get(v)]
    raise ValueError(f"the score record has no {variant!r} scores (it has {present}): it was written "
                     f"before that variant existed. Recompute the scores (a fresh out_dir, or delete "
                     f"its scores/) or choose one of {present}")
  return values
