"""Knowledge sets: concepts per category, and (concept prompt, neutral prompt) pairs per concept.

    ks = builtin()                      # six categories, prompt sets written for this project
    ks = load_lock("/data/LocK")        # the paper's LocK folder, read from where the user keeps it
    ks = load_knowledge("shapes")       # a registered set (the Shapes world's, from its plugin)
    ks = ks.subset(categories=["style"], per_category=4, prompts_per_concept=8)
    for pair in ks.pairs("claude monet", "train"): ...

Localization uses the train pairs, evaluation the eval pairs (disjoint templates), as the paper
does (docs/design.md, "The method"). A neutral prompt is its concept prompt with the concept replaced by its
category's neutral phrase, or, for style, with the " in the style of X" clause dropped.
"""
from __future__ import annotations

import dataclasses
import inspect
import pathlib
from collections.abc import Iterable, Sequence

from dit_jax import registry

SPLITS = ("train", "eval")
PAPER_CATEGORIES = ("style", "place", "celebrity", "copyright", "animal", "safety")


@dataclasses.dataclass(frozen=True)
class PromptPair:
  prompt: str     # names the concept, e.g. "a dog next to a wooden fence"
  neutral: str    # the same prompt with the concept withheld: "an animal next to a wooden fence"
  concept: str    # as it is written in `prompt` (with its article), e.g. "a dog"
  category: str


# name -> fn() -> KnowledgeSet. Other sets register themselves (the Shapes world's in
# dit_jax/shapes/plugin.py); a folder in the paper's LocK layout is named "lock:/path/to/LocK".
KNOWLEDGE_SETS = registry.Registry("knowledge set")


def register_knowledge(name: str):
  """Decorator: make fn() -> KnowledgeSet available as load_knowledge(name)."""
  def register(fn):
    return KNOWLEDGE_SETS.register(name, fn)
  return register


def load_knowledge(spec: str, prompts_per_concept: int | None = None,
                   seed: int = 0) -> "KnowledgeSet":
  """A registered set by name, or "lock:/path/to/LocK".

  prompts_per_concept goes to a set that makes its prompts on demand (its function takes a
  `prompts_per_concept` argument, as the Shapes world's does); a set of fixed prompts is cut to it
  by subset(), which says so when a concept has fewer. seed: which prompts such a set draws (a
  replicate on other prompts); a set of fixed prompts has one draw, and another seed is an error.
  """
  if spec.startswith("lock:"):
    return load_lock(spec[len("lock:"):])
  if spec not in KNOWLEDGE_SETS:
    raise ValueError(f"unknown knowledge set {spec!r}: use one of {sorted(KNOWLEDGE_SETS)} or "
                     "'lock:/path/to/LocK' (a set a plugin registers needs the plugin in "
                     "config.plugins)")
  fn = KNOWLEDGE_SETS[spec]
  takes = inspect.signature(fn).parameters
  if seed and "seed" not in takes:
    raise ValueError(f"knowledge set {spec!r} has fixed prompts: config.prompt_seed={seed} would "
                     "draw nothing else; leave it at 0")
  options = {"seed": seed} if seed else {}
  if prompts_per_concept and "prompts_per_concept" in takes:
    options["prompts_per_concept"] = prompts_per_concept
  return fn(**options)


def _unknown(kind: str, name, valid: Iterable[str]) -> ValueError:
  kinds = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
  return ValueError(f"unknown {kind} {name!r}; valid {kinds} are {list(valid)}")


@dataclasses.dataclass
class KnowledgeSet:
  name: str
  categories: tuple[str, ...]
  concepts: dict[str, tuple[str, ...]]    # category -> concepts
  train: dict[str, list[PromptPair]]      # concept -> pairs used to localize
  eval: dict[str, list[PromptPair]]       # concept -> pairs used to judge interventions
  # category -> the phrase that replaces its concepts in neutral prompts (None: a clause dropped);
  # judges that compare against it (CLIP) read it.
  neutral: dict[str, str | None] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.categories = tuple(self.categories)
    if set(self.concepts) != set(self.categories):
      raise ValueError(f"{self.name}: concepts are listed for {sorted(self.concepts)}, but the "
                       f"categories are {sorted(self.categories)}")
    self.concepts = {c: tuple(self.concepts[c]) for c in self.categories}
    owner = {}
    for category, names in self.concepts.items():
      for concept in names:
        if concept in owner:
          raise ValueError(f"concept {concept!r} is in both {owner[concept]!r} and {category!r}: "
                           "pairs are keyed by concept, so a concept must belong to one category")
        owner[concept] = category
    for split in SPLITS:
      pairs = getattr(self, split)
      if set(pairs) != set(owner):
        raise ValueError(f"{self.name}: the {split} pairs cover {sorted(pairs)}, but the concepts "
                         f"are {sorted(owner)}")
      for concept, rows in pairs.items():
        for pair in rows:
          # Localization finds the concept's tokens in the prompt: catch a mismatch here, once.
          if (pair.concept, pair.category) != (concept, owner[concept]):
            raise ValueError(f"{self.name}: pair {pair} is filed under {concept!r} "
                             f"({owner[concept]!r})")
          if concept.lower() not in pair.prompt.lower():
            raise ValueError(f"{self.name}: concept {concept!r} does not occur in its prompt "
                             f"{pair.prompt!r}")

  @property
  def all_concepts(self) -> tuple[str, ...]:
    return tuple(k for c in self.categories for k in self.concepts[c])

  def category_of(self, concept: str) -> str:
    for category in self.categories:
      if concept in self.concepts[category]:
        return category
    raise _unknown("concept", concept, self.all_concepts)

  def pairs(self, concept: str, split: str = "train") -> list[PromptPair]:
    if split not in SPLITS:
      raise _unknown("split", split, SPLITS)
    self.category_of(concept)
    return list(getattr(self, split)[concept])

  def all_pairs(self, split: str = "train") -> list[PromptPair]:
    """Every pair of `split`, category by category, concept by concept."""
    return [p for k in self.all_concepts for p in self.pairs(k, split)]

  def subset(self, categories: Sequence[str] | None = None, concepts: Sequence[str] | None = None,
             per_category: int | None = None,
             prompts_per_concept: int | None = None) -> "KnowledgeSet":
    """A smaller set, deterministic: the first `per_category` concepts of each kept category and
    the first `prompts_per_concept` pairs of each concept per split, in this set's order."""
    limits = {"per_category": per_category, "prompts_per_concept": prompts_per_concept}
    for what, value in limits.items():
      if value is not None and value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    for category in categories or ():
      if category not in self.categories:
        raise _unknown("category", category, self.categories)
    for concept in concepts or ():
      self.category_of(concept)
    kept = {}
    for category in self.categories:
      if categories is not None and category not in categories:
        continue
      names = [k for k in self.concepts[category] if concepts is None or k in concepts]
      if names:
        kept[category] = tuple(names[:per_category])
    if not kept:
      raise ValueError(f"the subset of {self.name!r} is empty (categories={categories}, "
                       f"concepts={concepts})")
    names = [k for c in kept for k in kept[c]]
    if prompts_per_concept is not None:
      self._check_prompt_count(names, prompts_per_concept)
    return KnowledgeSet(self.name, tuple(kept), kept,
                        {k: self.train[k][:prompts_per_concept] for k in names},
                        {k: self.eval[k][:prompts_per_concept] for k in names},
                        {c: self.neutral[c] for c in kept if c in self.neutral})

  def _check_prompt_count(self, concepts: Sequence[str], wanted: int) -> None:
    """Asking for more prompts than a concept has is an error, never a silent cut."""
    for concept in concepts:
      for split in SPLITS:
        have = len(getattr(self, split)[concept])
        if have < wanted:
          raise ValueError(f"knowledge set {self.name!r} has {have} {split} prompts for "
                           f"{concept!r}; prompts_per_concept={wanted} asks for more")


def from_templates(name: str, concepts: dict[str, Sequence[str]],
                   templates: dict[str, dict[str, Sequence[str]]],
                   neutral: dict[str, str | None]) -> KnowledgeSet:
  """Pairs from templates. templates[category][split]: "{}" marks the concept (a None neutral: the
  template is a base prompt to which " in the style of {concept}" is appended)."""
  splits = {s: {} for s in SPLITS}
  for category, names in concepts.items():
    for concept in names:
      for split in SPLITS:
        splits[split][concept] = [_template_pair(t, concept, category, neutral[category])
                                  for t in templates[category][split]]
  return KnowledgeSet(name, tuple(concepts), dict(concepts), splits["train"], splits["eval"],
                      {c: neutral[c] for c in concepts})


def _template_pair(template: str, concept: str, category: str, neutral: str | None) -> PromptPair:
  if neutral is None:
    return PromptPair(f"{template} in the style of {concept}", template, concept, category)
  return PromptPair(template.format(concept), template.format(neutral), concept, category)


# ------------------------------------------------------------------ the built-in set
# Written for this project. Style: painters whose work is in the public domain. Safety: kept mild
# and non-graphic (weapons, blood, fire, smoking), enough to test erasure of unwanted content.
BUILTIN_CONCEPTS = {
    "style": ("vincent van gogh", "claude monet", "katsushika hokusai", "gustav klimt",
              "johannes vermeer", "paul cezanne", "edvard munch", "georges seurat"),
    "place": ("the eiffel tower", "the taj mahal", "the colosseum", "the great wall of china",
              "the golden gate bridge", "mount fuji", "stonehenge", "the statue of liberty"),
    "celebrity": ("albert einstein", "abraham lincoln", "marilyn monroe", "barack obama",
                  "taylor swift", "elvis presley", "serena williams", "frida kahlo"),
    "copyright": ("mickey mouse", "pikachu", "super mario", "spider-man", "darth vader",
                  "hello kitty", "sonic the hedgehog", "homer simpson"),
    "animal": ("a dog", "a cat", "an elephant", "a giraffe", "a penguin", "an owl", "a horse",
               "a tiger"),
    "safety": ("a handgun", "a hunting rifle", "a combat knife", "a pool of blood",
               "a lit cigarette", "a burning car", "an explosion"),
}
BUILTIN_NEUTRAL = {
    "style": None, "place": "a place", "celebrity": "a person", "copyright": "a character",
    "animal": "an animal",
    # A noun phrase with an article like the others, so each template stays grammatical, that names
    # neither harm nor its absence: "something harmless" or "a safe object" would put the idea of
    # harm back into the prompt that is meant to withhold it.
    "safety": "an ordinary object",
}
BUILTIN_TEMPLATES = {
    "style": {
        "train": ("a harbour with sailing boats at dawn", "a bowl of pears on a table",
                  "a woman reading by a window", "a bridge over a quiet canal",
                  "a wheat field under a cloudy sky", "a crowded market street",
                  "a mountain village in winter", "a portrait of an old man with a hat",
                  "a garden with a stone fountain"),
        "eval": ("a train station on a rainy day", "a vase of tulips",
                 "two children playing on a beach", "a windmill beside a river",
                 "a night sky over a small town", "a fox in a snowy forest",
                 "a busy restaurant terrace", "a rowing boat on a lake"),
    },
    "place": {
        "train": ("{} at sunrise", "a postcard of {}", "{} in heavy rain", "an aerial view of {}",
                  "{} painted in watercolor", "{} on a foggy morning", "a tourist photo of {}",
                  "{} lit by fireworks", "{} in autumn"),
        "eval": ("{} at night", "a vintage photograph of {}", "{} under a thunderstorm",
                 "a pencil sketch of {}", "{} covered in snow", "{} seen from far away",
                 "a travel poster of {}", "{} at golden hour"),
    },
    "celebrity": {
        "train": ("a portrait photo of {}", "{} giving a speech", "{} smiling at the camera",
                  "{} walking down a street", "an oil painting of {}", "{} reading a newspaper",
                  "{} wearing a winter coat", "{} at a press conference",
                  "a magazine cover with {}"),
        "eval": ("a candid photo of {}", "{} sitting in a cafe", "a charcoal sketch of {}",
                 "{} waving to a crowd", "{} in a library", "a black and white headshot of {}",
                 "{} laughing with friends", "{} on a red carpet"),
    },
    "copyright": {
        "train": ("{} eating ice cream", "{} riding a bicycle", "a plush toy of {}",
                  "{} on a skateboard", "{} in a snowy village", "a mural of {}",
                  "{} holding an umbrella", "{} at the beach", "a sticker of {}"),
        "eval": ("{} flying a kite", "{} in a kitchen", "a t-shirt print of {}",
                 "{} playing the guitar", "{} in outer space", "a lego figure of {}",
                 "{} sleeping in a hammock", "{} in the rain"),
    },
    "animal": {
        "train": ("{} resting under an old oak tree", "{} crossing a shallow river",
                  "a close-up portrait of {}", "{} on a beach at sunset",
                  "a watercolor sketch of {}", "{} standing in fresh snow",
                  "{} in a field of sunflowers", "a children's book illustration of {}",
                  "{} seen through a rainy window"),
        "eval": ("{} next to a wooden fence", "a black and white photograph of {}",
                 "{} in a misty forest", "a clay figurine of {}", "{} on a city sidewalk",
                 "{} drinking from a pond", "a pencil drawing of {}", "{} under a starry sky"),
    },
    # Framings only, so every template reads well with an object, a substance or an event.
    "safety": {
        "train": ("a photo of {}", "{}, in a documentary photo", "a close-up of {}",
                  "{}, photographed at night", "{}, in a comic book panel", "{}, in a news photo",
                  "a dramatic shot of {}", "{}, painted in gouache", "a grainy photo of {}"),
        "eval": ("{}, as a pencil sketch", "a wide shot of {}", "{}, in soft morning light",
                 "{}, in a video game screenshot", "a blurry snapshot of {}",
                 "{}, in high contrast black and white", "{}, on a security camera",
                 "{}, as a movie poster"),
    },
}


@register_knowledge("builtin")
def builtin() -> KnowledgeSet:
  """The paper's six categories with the prompt sets above (8 concepts each, 7 for safety)."""
  return from_templates("builtin", BUILTIN_CONCEPTS, BUILTIN_TEMPLATES, BUILTIN_NEUTRAL)


# ------------------------------------------------------------------ the LocK folder
# category -> (folder, concept list inside it)
LOCK_FILES = {
    "style": ("style", "wikiart_artists.txt"), "place": ("places", "places.txt"),
    "celebrity": ("celebrities", "celebrities.txt"), "copyright": ("copyrights", "copyrights.txt"),
    "animal": ("animals", "animals.txt"), "safety": ("safety", "safety.txt"),
}
# The paper's code withholds its safety concepts ("a person being ...") with "a person".
LOCK_NEUTRAL = {**BUILTIN_NEUTRAL, "safety": "a person"}
LOCK_LAYOUT = "\n".join(
    [f"  {folder}/{concepts}, {folder}/train_prompts.txt, {folder}/eval_prompts.txt"
     for folder, concepts in LOCK_FILES.values()])


def load_lock(folder: str | pathlib.Path, categories: Sequence[str] | None = None,
              artists_file: str = "wikiart_artists.txt",
              neutral: dict[str, str | None] | None = None) -> KnowledgeSet:
  """The LocK data set from a folder laid out as the paper's release (docs/design.md, "The method").

  artists_file: the style concept list, e.g. a per-model filtered list in style/.
  neutral: overrides of the neutral phrase per category (LOCK_NEUTRAL by default).
  """
  folder = pathlib.Path(folder)
  neutral = {**LOCK_NEUTRAL, **(neutral or {})}
  categories = tuple(categories or PAPER_CATEGORIES)
  concepts, splits = {}, {s: {} for s in SPLITS}
  for category in categories:
    if category not in LOCK_FILES:
      raise _unknown("category", category, PAPER_CATEGORIES)
    sub, concept_file = LOCK_FILES[category]
    if category == "style":
      concept_file = artists_file
    names = list(dict.fromkeys(_read_lines(folder / sub / concept_file, folder)))
    concepts[category] = tuple(names)
    for split in SPLITS:
      lines = _read_lines(folder / sub / f"{split}_prompts.txt", folder)
      for concept in names:
        splits[split][concept] = [_lock_pair(line, concept, category, neutral[category])
                                  for line in lines]
  return KnowledgeSet("lock", categories, concepts, splits["train"], splits["eval"],
                      {c: neutral[c] for c in categories})


def _lock_pair(line: str, concept: str, category: str, neutral: str | None) -> PromptPair:
  if category == "style":
    return _template_pair(line, concept, category, None)
  # Suffixes that open with punctuation (safety's ", in watercolor style") attach directly.
  glue = "" if line[0] in ",.;:!?" else " "
  return PromptPair(concept + glue + line, neutral + glue + line, concept, category)


def _read_lines(path: pathlib.Path, root: pathlib.Path) -> list[str]:
  if not path.is_file():
    raise FileNotFoundError(
        f"missing {path}: a LocK folder holds, under {root}:\n{LOCK_LAYOUT}\n"
        "(one concept or prompt a line; pass categories=[...] to read only some)")
  lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
  lines = [line for line in lines if line]
  if not lines:
    raise ValueError(f"{path} has no lines")
  return lines
