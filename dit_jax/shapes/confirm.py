"""Two judges on the same images: the learned classifier and the pixel judge (pixel_judge.py).

    asks = asks_from_pairs(pairs)            # or asks_from_prompts(prompts): what each image should show
    check = confirm(images, asks)            # uint8 (N, 32, 32, 3); the shipped judges by default
    check.summary()    # {category: {images, first_present, second_present, confirmed, disagree, ...}}
    check.message()    # "colour: confirmed by the pixel judge on 30 of 32 images; the judges disagree on 2"

A concept counts as read when the judge's head for its category puts it first (the rule of
ShapesJudge.category_accuracy; at the threshold 0.5 every ShapesJudge.present hit is one). Only the
categories the second judge reads are compared; others are left out of every count.

`agreement(first, second, classes)` is the per-category statistic of studies/second_judge.py:
agreement rate with its Clopper-Pearson interval, Cohen's kappa and the confusion counts.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from dit_jax.localize.judges import check_images
from dit_jax.verdict.stats import clopper_pearson


def asks_from_pairs(pairs: Sequence) -> list[dict[str, str]]:
  """Per image, {category: concept} of its prompt pair (PromptPair's category and concept)."""
  return [{p.category: p.concept} for p in pairs]


def asks_from_prompts(prompts: Sequence[str]) -> list[dict[str, str]]:
  """Per image, every concept its Shapes caption names."""
  from dit_jax.shapes.judge import named_concepts
  return [named_concepts(p) for p in prompts]


@dataclasses.dataclass
class Confirmation:
  """Per category the second judge reads: which images asked for a concept of it (`rows`), and
  whether each judge reads that concept there (`first`, `second`: bool, one per row)."""
  rows: dict[str, np.ndarray]
  first: dict[str, np.ndarray]
  second: dict[str, np.ndarray]
  second_name: str = "pixel judge"

  def disagreeing(self, category: str) -> list[int]:
    """Image indices where one judge reads the asked concept and the other does not."""
    return self.rows[category][self.first[category] != self.second[category]].tolist()

  def summary(self) -> dict[str, dict]:
    out = {}
    for c in self.rows:
      first, second = self.first[c], self.second[c]
      out[c] = {"images": int(first.size), "first_present": int(first.sum()),
                "second_present": int(second.sum()), "confirmed": int((first & second).sum()),
                "disagree": int((first != second).sum()), "disagreeing_images": self.disagreeing(c)}
    return out

  def message(self) -> str:
    """One line per category, for a console or a report."""
    lines = []
    for c, s in self.summary().items():
      line = (f"{c}: confirmed by the {self.second_name} on {s['confirmed']} of "
              f"{s['first_present']} images the first judge finds it in ({s['images']} asked)")
      if s["disagree"]:
        line += f"; the judges disagree on {s['disagree']} images: {s['disagreeing_images']}"
      lines.append(line)
    return "\n".join(lines)


def _default_judges(first, second):
  if first is None:
    from dit_jax.shapes.judge import ShapesJudge
    first = ShapesJudge()
  if second is None:
    from dit_jax.shapes.pixel_judge import PixelJudge
    second = PixelJudge()
  return first, second


def confirm(images, asks: Sequence[Mapping[str, str]], first=None, second=None) -> Confirmation:
  """Both judges' decisions on the concepts `asks` names per image. first, second: objects with
  predictions(uint8 images) -> {category: HeadPrediction} (ShapesJudge and PixelJudge by
  default); second.categories are the categories compared."""
  images = check_images(images)
  if len(asks) != len(images):
    raise ValueError(f"{len(images)} images but {len(asks)} asks")
  first, second = _default_judges(first, second)
  heads_a, heads_b = first.predictions(images), second.predictions(images)
  rows, read_a, read_b = {}, {}, {}
  for category in second.categories:
    asked = [(i, a[category]) for i, a in enumerate(asks) if category in a]
    if not asked:
      continue
    names_a, names_b = heads_a[category].names, heads_b[category].names
    rows[category] = np.array([i for i, _ in asked], int)
    read_a[category] = np.array([names_a[i] == k for i, k in asked], bool)
    read_b[category] = np.array([names_b[i] == k for i, k in asked], bool)
  return Confirmation(rows, read_a, read_b)


def cohen_kappa(confusion: np.ndarray) -> float | None:
  """Cohen's kappa of a square table of counts (rows: one judge, columns: the other); None where
  chance agreement is 1 (both judges give every image the same one class: kappa is undefined)."""
  confusion = np.asarray(confusion, float)
  n = confusion.sum()
  if n == 0:
    return None
  observed = np.trace(confusion) / n
  expected = float(confusion.sum(1) @ confusion.sum(0)) / (n * n)
  if expected >= 1.0:
    return None
  return float((observed - expected) / (1.0 - expected))


def agreement(first: Sequence[int], second: Sequence[int], classes: Sequence[str]) -> dict:
  """Two judges' class indices on the same images: n, agreeing images, the rate with its exact
  95% interval, Cohen's kappa, and the confusion counts (first judge's class in rows)."""
  first, second = np.asarray(first, int), np.asarray(second, int)
  if first.shape != second.shape:
    raise ValueError(f"{first.size} and {second.size} readings cannot be compared")
  k = len(classes)
  confusion = np.zeros((k, k), int)
  np.add.at(confusion, (first, second), 1)
  n, agree = int(first.size), int(np.trace(confusion))
  return {"n": n, "agree": agree, "rate": agree / n if n else None,
          "interval": clopper_pearson(agree, n) if n else None, "kappa": cohen_kappa(confusion),
          "classes": list(classes), "confusion": confusion.tolist()}
