"""The Shapes judge: the world's classifier (classifier.py) behind the core's Judge interface, with the
concepts a Shapes caption names read off its words. Registered as "shapes" by plugin.py."""
from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence

import numpy as np

from dit_jax.localize.judges import Judge, check_images
from dit_jax.knowledge import PromptPair
from dit_jax.shapes import world


# ------------------------------------------------------------------ knowledge set
class ShapesJudge(Judge):
  """The Shapes classifier: presence = its head's probability of the concept. With the threshold
  0.5 a concept judged present is also the head's predicted class."""

  def __init__(self, folder: str | pathlib.Path | None = None, threshold: float = 0.5):
    from dit_jax.shapes import classifier
    super().__init__(threshold)
    self.folder = pathlib.Path(folder or classifier.DEFAULT_DIR)
    self.model = classifier.load_classifier(self.folder)

  def version(self) -> str:
    return self.model.meta.get("format", "unknown")

  def weight_files(self) -> list[pathlib.Path]:
    return [self.folder / "params.safetensors", self.folder / "judge.json"]

  def predictions(self, images):
    """{category: HeadPrediction} for uint8 images."""
    return self.model(check_images(images).astype(np.float32) / 127.5 - 1.0)

  def _presence(self, images, pairs):
    heads = self.predictions(images)
    scores = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
      classes = world.JUDGE_CLASSES.get(pair.category, ())
      if pair.concept not in classes:
        raise ValueError(f"the Shapes judge has no class {pair.concept!r} for category "
                         f"{pair.category!r}; its heads are {world.JUDGE_CLASSES}")
      scores[i] = heads[pair.category].probs[i, classes.index(pair.concept)]
    return scores

  def chance(self, category: str) -> float | None:
    """One in the head's classes: what a blind guess would get."""
    classes = world.JUDGE_CLASSES.get(category)
    return 1.0 / len(classes) if classes else None

  def context(self, images, pairs: Sequence[PromptPair]) -> np.ndarray:
    """Per image, the share of the other categories its caption names that the classifier finds."""
    heads = self.predictions(images)
    if len(pairs) != len(images):
      raise ValueError(f"{len(images)} images but {len(pairs)} prompts")
    kept = np.full(len(pairs), np.nan)
    for i, pair in enumerate(pairs):
      named = {c: k for c, k in named_concepts(pair.prompt).items() if c != pair.category}
      if named:
        kept[i] = np.mean([heads[c].names[i] == k for c, k in named.items()])
    return kept

  def second_opinion(self, images, pairs: Sequence[PromptPair]) -> dict | None:
    """The pixel judge's reading beside this classifier's, for colour, position and place (None
    for the categories it cannot read without learning). A concept counts as read where a judge's
    head puts it first, the rule of confirm.py (which imports this module, hence not called)."""
    from dit_jax.shapes import pixel_judge
    if len(pairs) != len(images):
      raise ValueError(f"{len(images)} images but {len(pairs)} prompts")
    category = pairs[0].category
    if category not in pixel_judge.CATEGORIES:
      return None
    asked = [p.concept for p in pairs]
    read = lambda judge: [name == concept for name, concept in
                          zip(judge.predictions(images)[category].names, asked)]
    return {"judge": "pixel judge", "first": read(self), "second": read(pixel_judge.PixelJudge())}

  def category_accuracy(self, images, prompts: Sequence[str | PromptPair]) -> dict[str, float]:
    """category -> fraction of the images whose head predicts the concept their prompt names,
    over the prompts that name one: for an intervention on one category, the other categories'
    accuracy measures what it disturbed. Categories no prompt names are left out."""
    return {c: float(np.mean(h)) for c, h in named_hits(self.predictions(images), prompts).items()}


def named_hits(heads: dict, prompts: Sequence[str | PromptPair],
               categories: Sequence[str] = world.CATEGORIES) -> dict[str, np.ndarray]:
  """category -> (n,) bool over the prompts that name one of `categories`: whether the head
  (any judge's predictions, {category: HeadPrediction}) reads the concept the prompt names.
  One rule for both Shapes judges; categories no prompt names are left out."""
  named = [named_concepts(p.prompt if isinstance(p, PromptPair) else p) for p in prompts]
  images = len(next(iter(heads.values())).labels)
  if images != len(named):
    raise ValueError(f"{images} images but {len(named)} prompts")
  hits = {}
  for category in categories:
    rows = [(i, n[category]) for i, n in enumerate(named) if category in n]
    if rows:
      predicted = heads[category].names
      hits[category] = np.array([predicted[i] == concept for i, concept in rows])
  return hits


_SUBJECT = re.compile(r"(an?) (?:(\w+) )?(\w+)")


def named_concepts(prompt: str) -> dict[str, str]:
  """category -> concept that a Shapes caption (full or partly neutral) names; the inverse of
  world.caption: named_concepts(world.caption(scene)) == world.concepts_in(scene)."""
  def fail(why):
    return ValueError(f"{prompt!r} is not a Shapes caption ({why}); captions read "
                      "'{subject} [{position}] in {place}[, {texture} style]'")
  text, named = prompt, {}
  if text.endswith(" style"):
    text, _, texture = text[:-len(" style")].rpartition(", ")
    if texture not in world.TEXTURES:
      raise fail(f"unknown texture {texture!r}")
    named["texture"] = texture
  place = next((p for p in world.PLACES + (world.NEUTRAL["place"],) if text.endswith(" in " + p)),
               None)
  if place is None:
    raise fail("no place")
  text = text[:-len(" in " + place)]
  if place in world.PLACES:
    named["place"] = place
  position = next((p for p in world.POSITIONS if text.endswith(" " + p)), None)
  if position is not None:
    text, named["position"] = text[:-len(" " + position)], position
  if text in world.CHARACTERS:
    named["character"] = text
  elif text != world.GENERIC_CHARACTER:
    match = _SUBJECT.fullmatch(text)
    if match is None:
      raise fail(f"unknown subject {text!r}")
    _, colour, noun = match.groups()
    if colour is not None:
      if colour not in world.COLOURS:
        raise fail(f"unknown colour {colour!r}")
      named["colour"] = colour
    if noun in world.SHAPES:
      named["shape"] = noun
    elif noun != world.NEUTRAL["shape"]:
      raise fail(f"unknown shape {noun!r}")
  return named
