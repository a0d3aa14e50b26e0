"""The Shapes world: scenes, captions and concepts whose ground truth we know.

A scene is one shape on a background. Six knowledge categories mirror the paper's six:

  category   paper twin          concepts (caption words)                       neutral form
  shape      animal              circle, square, triangle, star, heart, cross   "shape"
  colour     (subject attribute) red, green, blue, yellow, purple, orange       colour word dropped
  texture    style               solid, striped, dotted, checkered              ", X style" dropped
  place      place               the sky, the grass, the desert, the night,     "a place"
                                 the snow
  position   (layout)            on the left, on the right, at the top,         phrase dropped
                                 at the bottom, in the middle
  character  celebrity/copyright zork, blip, mira, tobo, kiki                   "a character"

A named character is a fixed bundle (shape, colour, texture) *plus a face* (two eyes), so knowing
"zork" is more than composing attribute words, as knowing "the batman" is more than "a man in a
cape". "a character" is a face on a look that belongs to no named character (the paper's "a
person"). The paper has no safety twin here (the world has no harmful content); colour and position
take the two free slots because they exercise attribute binding and layout.

Captions (the concept prompt):  "a red star on the left in the desert, striped style"
                                "zork at the top in the snow"
Neutral captions replace one concept by its neutral form (docs/design.md, "The method"); training captions
apply the same replacement at random per attribute, so every neutral caption is in distribution.
"""
from __future__ import annotations

import dataclasses
import itertools
import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
TEXTURES = ("solid", "striped", "dotted", "checkered")
PLACES = ("the sky", "the grass", "the desert", "the night", "the snow")
POSITIONS = ("on the left", "on the right", "at the top", "at the bottom", "in the middle")
# name -> (shape, colour, texture). Each look is unique and none uses a held-out triple.
CHARACTERS = {
    "zork": ("star", "purple", "dotted"),
    "blip": ("circle", "yellow", "striped"),
    "mira": ("heart", "green", "checkered"),
    "tobo": ("triangle", "orange", "solid"),
    "kiki": ("square", "blue", "dotted"),
}
# Words in the vocabulary that no training caption uses: names for knowledge planted later by
# fine-tuning (a word-level tokenizer maps unseen names to <unk>, which would make them all alike).
RESERVED_NAMES = ("quib", "vexa", "nolo", "pim", "raxo", "sulu", "dobi", "wren")

CATEGORIES = ("shape", "colour", "texture", "place", "position", "character")
PAPER_TWIN = {"shape": "animal", "colour": None, "texture": "style", "place": "place",
              "position": None, "character": "celebrity/copyright"}
CONCEPTS = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES, "place": PLACES,
            "position": POSITIONS, "character": tuple(CHARACTERS)}
# What replaces a concept in its neutral caption; None: the word or clause is dropped.
NEUTRAL = {"shape": "shape", "colour": None, "texture": None, "place": "a place",
           "position": None, "character": "a character"}
GENERIC_CHARACTER = "a character"


@dataclasses.dataclass(frozen=True)
class Scene:
  """One image's ground truth. `character` is a name, GENERIC_CHARACTER or None (a plain shape).

  For characters, shape/colour/texture hold the look that is drawn (a named one's bundle); the
  caption does not name them. `render_seed` drives size, jitter and texture phase.
  """
  shape: str
  colour: str
  texture: str
  place: str
  position: str
  character: str | None
  render_seed: int

  @property
  def has_face(self) -> bool:
    return self.character is not None

  @property
  def is_named(self) -> bool:
    """A named character: one of CHARACTERS or a name planted later by fine-tuning."""
    return self.character not in (None, GENERIC_CHARACTER)

  @property
  def look(self) -> tuple[str, str, str]:
    return (self.shape, self.colour, self.texture)

  def labels(self) -> dict[str, int]:
    """Class index per judge head; the character head's class 0 is "none" (plain or generic)."""
    named = self.character if self.character in CHARACTERS else None
    return {"shape": SHAPES.index(self.shape), "colour": COLOURS.index(self.colour),
            "texture": TEXTURES.index(self.texture), "place": PLACES.index(self.place),
            "position": POSITIONS.index(self.position),
            "character": 0 if named is None else 1 + list(CHARACTERS).index(named)}


JUDGE_CLASSES = {**{c: CONCEPTS[c] for c in CATEGORIES if c != "character"},
                 "character": ("none",) + tuple(CHARACTERS)}


def _heldout_triples() -> tuple[tuple[str, str, str], ...]:
  """12 (shape, colour, texture) looks never drawn in training, fixed forever.

  Chosen so that no two share a (shape, colour), (shape, texture) or (colour, texture) pair: every
  pair of a held-out triple is still seen in training, only the triple is new.
  """
  rng = np.random.default_rng(20250524)
  named = set(CHARACTERS.values())
  chosen, pairs = [], set()
  for i in rng.permutation(len(SHAPES) * len(COLOURS) * len(TEXTURES)):
    s, rest = divmod(int(i), len(COLOURS) * len(TEXTURES))
    c, t = divmod(rest, len(TEXTURES))
    triple = (SHAPES[s], COLOURS[c], TEXTURES[t])
    keys = {("sc", s, c), ("st", s, t), ("ct", c, t)}
    if triple in named or keys & pairs:
      continue
    chosen.append(triple)
    pairs |= keys
    if len(chosen) == 12:
      break
  return tuple(sorted(chosen))


HELDOUT_TRIPLES = _heldout_triples()
# Each named character is never shown in one place (a different place for each).
HELDOUT_CHARACTER_PLACES = tuple((name, PLACES[i % len(PLACES)])
                                 for i, name in enumerate(CHARACTERS))


def is_heldout(scene: Scene) -> bool:
  """True if the scene uses a combination that the training sampler never produces."""
  if scene.character in CHARACTERS:
    return (scene.character, scene.place) in HELDOUT_CHARACTER_PLACES
  return scene.look in HELDOUT_TRIPLES


# Mix of scene kinds: mostly plain shapes (they carry shape/colour/texture words).
KIND_WEIGHTS = {"plain": 0.7, "named": 0.2, "generic": 0.1}


def _random_scene(rng: np.random.Generator) -> Scene:
  kind = rng.choice(list(KIND_WEIGHTS), p=list(KIND_WEIGHTS.values()))
  place = PLACES[rng.integers(len(PLACES))]
  position = POSITIONS[rng.integers(len(POSITIONS))]
  render_seed = int(rng.integers(2**31))
  if kind == "named":
    name = list(CHARACTERS)[rng.integers(len(CHARACTERS))]
    return Scene(*CHARACTERS[name], place, position, name, render_seed)
  while True:
    look = (SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))],
            TEXTURES[rng.integers(len(TEXTURES))])
    # A generic character must not look like a named one, or "a character" would mean "zork".
    if kind == "plain" or look not in CHARACTERS.values():
      return Scene(*look, place, position, GENERIC_CHARACTER if kind == "generic" else None,
                   render_seed)


def sample_scene(seed: int, split: str = "train") -> Scene:
  """A deterministic scene from `seed`. split: "train" (no held-out combination), "heldout" (only
  held-out combinations) or "any"."""
  if split not in ("train", "heldout", "any"):
    raise ValueError(f"split must be 'train', 'heldout' or 'any', got {split!r}")
  rng = np.random.default_rng([seed, 0x5EA])
  if split == "heldout":
    return _heldout_scene(rng)
  while True:
    scene = _random_scene(rng)
    if split == "any" or not is_heldout(scene):
      return scene


def _heldout_scene(rng: np.random.Generator) -> Scene:
  position = POSITIONS[rng.integers(len(POSITIONS))]
  render_seed = int(rng.integers(2**31))
  if rng.random() < 0.3:
    name, place = HELDOUT_CHARACTER_PLACES[rng.integers(len(HELDOUT_CHARACTER_PLACES))]
    return Scene(*CHARACTERS[name], place, position, name, render_seed)
  look = HELDOUT_TRIPLES[rng.integers(len(HELDOUT_TRIPLES))]
  return Scene(*look, PLACES[rng.integers(len(PLACES))], position, None, render_seed)


def scenes(seed: int, n: int, split: str = "train") -> list[Scene]:
  """n deterministic scenes; scene i depends only on (seed, i), so prefixes agree."""
  return [sample_scene(seed * 1_000_003 + i, split) for i in range(n)]


def concepts_in(scene: Scene) -> dict[str, str]:
  """category -> the concept the full caption of `scene` names."""
  named = {"place": scene.place, "position": scene.position}
  if scene.is_named:
    named["character"] = scene.character
  elif scene.character is None:
    named.update(shape=scene.shape, colour=scene.colour, texture=scene.texture)
  return named


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, neutral: tuple[str, ...] | frozenset[str] = ()) -> str:
  """The scene's caption, with the concepts of the categories in `neutral` in their neutral form.

  Template: "{subject} {position} in {place}[, {texture} style]" where the subject is
  "a {colour} {shape}", a character's name, or "a character".
  """
  present = concepts_in(scene)
  unknown = set(neutral) - set(CATEGORIES)
  if unknown:
    raise ValueError(f"unknown categories {sorted(unknown)}; categories are {CATEGORIES}")
  if scene.character is None:
    noun = NEUTRAL["shape"] if "shape" in neutral else scene.shape
    words = noun if "colour" in neutral else f"{scene.colour} {noun}"
    subject = f"{_article(words)} {words}"
  elif scene.is_named and "character" not in neutral:
    subject = scene.character
  else:
    subject = GENERIC_CHARACTER
  parts = [subject]
  if "position" not in neutral:
    parts.append(present["position"])
  parts.append("in " + (NEUTRAL["place"] if "place" in neutral else present["place"]))
  text = " ".join(parts)
  if "texture" in present and "texture" not in neutral:
    text += f", {scene.texture} style"
  return text


def neutral_caption(scene: Scene, category: str) -> str:
  """The caption with `category`'s concept replaced by its neutral phrase (or dropped)."""
  if category not in concepts_in(scene):
    raise ValueError(f"the caption {caption(scene)!r} names no {category!r} concept "
                     f"(it names {sorted(concepts_in(scene))})")
  return caption(scene, (category,))


def training_caption(scene: Scene, rng: np.random.Generator, p_neutral: float = 0.15,
                     p_empty: float = 0.0) -> str:
  """A caption with each named concept independently put in its neutral form with p_neutral, so
  that neutral captions are in distribution; "" with p_empty (for classifier-free guidance)."""
  if p_empty and rng.random() < p_empty:
    return ""
  present = sorted(concepts_in(scene))
  drop = rng.random(len(present)) < p_neutral
  return caption(scene, tuple(c for c, d in zip(present, drop) if d))


def concept_scenes(category: str, concept: str, n: int, seed: int = 0,
                   split: str = "train") -> list[Scene]:
  """n scenes whose caption names `concept`, other attributes random (deterministic in seed)."""
  if category not in CONCEPTS:
    raise ValueError(f"unknown category {category!r}; the Shapes world's categories are {list(CATEGORIES)}")
  if concept not in CONCEPTS[category]:
    raise ValueError(f"{concept!r} is not a concept of category {category!r}; its concepts are "
                     f"{list(CONCEPTS[category])}")
  rng = np.random.default_rng([seed, CATEGORIES.index(category), CONCEPTS[category].index(concept)])
  found = []
  while len(found) < n:
    scene = with_concept(_random_scene(rng), category, concept)
    if split == "train" and is_heldout(scene):
      continue
    found.append(scene)
  return found


def prompt_pairs(category: str, concept: str, n: int, seed: int = 0,
                 split: str = "train") -> list[tuple[str, str]]:
  """n (concept prompt, neutral prompt) pairs naming `concept`, other attributes random: the
  built-in prompt set for localization (the paper's LocK templates, for this world)."""
  return [(caption(s), neutral_caption(s, category))
          for s in concept_scenes(category, concept, n, seed, split)]


def planted_look(name: str) -> tuple[str, str, str]:
  """The look of a character planted under a reserved name: fixed per name, never a named
  character's look nor a held-out triple."""
  if name not in RESERVED_NAMES:
    raise ValueError(f"{name!r} is not a reserved name; reserved names are {RESERVED_NAMES}")
  taken = set(CHARACTERS.values()) | set(HELDOUT_TRIPLES)
  free = [look for look in all_looks() if look not in taken]
  return free[np.random.default_rng(RESERVED_NAMES.index(name)).integers(len(free))]


def planted_scenes(name: str, n: int, seed: int = 0) -> list[Scene]:
  """n scenes of the character planted as `name` (its look plus a face), place and position random."""
  look = planted_look(name)
  rng = np.random.default_rng([seed, 0x91A, RESERVED_NAMES.index(name)])
  return [Scene(*look, PLACES[rng.integers(len(PLACES))], POSITIONS[rng.integers(len(POSITIONS))],
                name, int(rng.integers(2**31))) for _ in range(n)]


def with_concept(scene: Scene, category: str, concept: str) -> Scene:
  """The scene with `category` set to `concept` (a character brings its whole look; a shape,
  colour or texture makes the subject a plain shape, whose caption names them)."""
  if category == "character":
    return dataclasses.replace(scene, shape=CHARACTERS[concept][0], colour=CHARACTERS[concept][1],
                               texture=CHARACTERS[concept][2], character=concept)
  if category in ("shape", "colour", "texture"):
    scene = dataclasses.replace(scene, character=None)
  return dataclasses.replace(scene, **{category: concept})


def vocabulary() -> list[str]:
  """Every word a caption can contain (plus reserved names), in a fixed order."""
  texts = list(CONCEPTS["shape"]) + list(COLOURS) + list(TEXTURES) + list(PLACES) + list(POSITIONS)
  texts += list(CHARACTERS) + list(RESERVED_NAMES)
  texts += [NEUTRAL["shape"], NEUTRAL["place"], GENERIC_CHARACTER, "a an in style ,"]
  words = []
  for text in texts:
    for word in text.replace(",", " , ").split():
      if word not in words:
        words.append(word)
  return words


def all_looks() -> list[tuple[str, str, str]]:
  return list(itertools.product(SHAPES, COLOURS, TEXTURES))
