"""The Shapes world as a client of the core: its judge, knowledge set and training tasks, registered by name
through the same interfaces a user's own judge or prompt set would use (docs/design.md, "Plugins").

    config.plugins = ("dit_jax.shapes.plugin",)       # configs/shapes.py
    judges.make_judge("shapes"); knowledge.load_knowledge("shapes")

The core never imports this module; an entry point imports the modules a config lists in
`plugins` before it resolves names.
"""
from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence

import numpy as np

from dit_jax import knowledge
from dit_jax.judges import Judge, check_images, register_judge
from dit_jax.knowledge import KnowledgeSet, PromptPair
from dit_jax.shapes import tasks, world   # noqa: F401  (tasks registers the training tasks)


# ------------------------------------------------------------------ knowledge set
@register_judge("shapes")
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

  def category_accuracy(self, images, prompts: Sequence[str | PromptPair]) -> dict[str, float]:
    """category -> fraction of the images whose head predicts the concept their prompt names,
    over the prompts that name one: for an intervention on one category, the other categories'
    accuracy measures what it disturbed. Categories no prompt names are left out."""
    heads = self.predictions(images)
    named = [named_concepts(p.prompt if isinstance(p, PromptPair) else p) for p in prompts]
    if len(named) != len(images):
      raise ValueError(f"{len(images)} images but {len(named)} prompts")
    accuracy = {}
    for category in world.CATEGORIES:
      rows = [(i, n[category]) for i, n in enumerate(named) if category in n]
      if rows:
        predicted = heads[category].names
        accuracy[category] = float(np.mean([predicted[i] == concept for i, concept in rows]))
    return accuracy


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


# ------------------------------------------------------------------ knowledge set
@knowledge.register_knowledge("shapes")
def shapes(prompts_per_concept: int = 8, seed: int = 0, train_per_concept: int | None = None,
           eval_per_concept: int | None = None) -> KnowledgeSet:
  """The Shapes world's categories with `prompts_per_concept` distinct train and as many distinct
  eval pairs per concept (train_/eval_per_concept set the splits apart). Train and eval pairs come
  from different seeds and share no prompt.

  Where the world has fewer distinct captions than that, a concept gets what it has, shared
  between the splits: a named character's caption is its name, a position and a place, 20 in all,
  so at most 10 per split. KnowledgeSet.subset(prompts_per_concept=...), which a localization run
  always goes through, then names the concept and its count in an error; nothing is cut silently.
  """
  n_train, n_eval = train_per_concept or prompts_per_concept, eval_per_concept or prompts_per_concept
  splits = {s: {} for s in knowledge.SPLITS}
  for category in world.CATEGORIES:
    for concept in world.CONCEPTS[category]:
      train, fresh = _split_pairs(category, concept, n_train, n_eval, seed)
      splits["train"][concept] = [PromptPair(p, q, concept, category) for p, q in train]
      splits["eval"][concept] = [PromptPair(p, q, concept, category) for p, q in fresh]
  return KnowledgeSet("shapes", world.CATEGORIES, dict(world.CONCEPTS), splits["train"],
                      splits["eval"], neutral_phrases())


def neutral_phrases() -> dict[str, str | None]:
  """category -> the phrase its neutral caption puts in place of the concept (None: dropped)."""
  return {c: ("a shape" if c == "shape" else world.NEUTRAL[c]) for c in world.CATEGORIES}


# Draws tried before a concept is taken to be short of captions: the world's large caption sets
# (hundreds) fill any request long before this, a named character's 20 are all seen by then.
MAX_DRAWS_PER_PROMPT = 64


def _split_pairs(category, concept, n_train, n_eval, seed):
  """(train, eval): n_train distinct pairs from `seed`, n_eval from seed + 1 not among them; where
  the world has fewer than n_train + n_eval, half of what it has in each split."""
  train = _distinct_pairs(category, concept, n_train, seed)
  fresh = train and _distinct_pairs(category, concept, n_eval, seed + 1, {p for p, _ in train})
  if fresh:
    return train, fresh
  count = len({p for s in (seed, seed + 1) for p, _ in world.prompt_pairs(
      category, concept, MAX_DRAWS_PER_PROMPT * max(n_train, n_eval), s, split="train")})
  half = count // 2
  train = _distinct_pairs(category, concept, min(n_train, half), seed)
  return train, _distinct_pairs(category, concept, min(n_eval, half), seed + 1,
                                {p for p, _ in train})


def _distinct_pairs(category, concept, n, seed, taken=frozenset()):
  """n distinct pairs drawn from `seed` whose prompt is not in `taken`; None if the world has
  fewer within MAX_DRAWS_PER_PROMPT * n draws."""
  drawn_n = 2 * n
  while True:
    # prompt_pairs is prefix-stable: asking for more only appends candidates.
    drawn = world.prompt_pairs(category, concept, drawn_n, seed, split="train")
    fresh = [pair for pair in dict.fromkeys(drawn) if pair[0] not in taken]
    if len(fresh) >= n:
      return fresh[:n]
    if drawn_n >= MAX_DRAWS_PER_PROMPT * n:
      return None
    drawn_n *= 2
