"""Knowledge sets: the built-in prompt sets, the LocK folder reader and the Shapes world's set."""
import pytest

from dit_jax import knowledge
from dit_jax.knowledge import KnowledgeSet, PromptPair
from dit_jax.shapes import plugin, world


@pytest.fixture(scope="module")
def builtin():
  return knowledge.builtin()


def test_builtin_has_the_papers_six_categories(builtin):
  assert builtin.categories == knowledge.PAPER_CATEGORIES
  for category in builtin.categories:
    assert 6 <= len(builtin.concepts[category]) <= 8, category
  assert builtin.category_of("a dog") == "animal"
  assert builtin.category_of("claude monet") == "style"


def test_builtin_train_and_eval_templates_are_disjoint(builtin):
  for category, splits in knowledge.BUILTIN_TEMPLATES.items():
    assert 8 <= len(splits["train"]) <= 10 and 8 <= len(splits["eval"]) <= 10, category
    assert not set(splits["train"]) & set(splits["eval"]), category
  for concept in builtin.all_concepts:
    train = {p.prompt for p in builtin.pairs(concept, "train")}
    assert train and not train & {p.prompt for p in builtin.pairs(concept, "eval")}


def test_builtin_neutral_prompts_withhold_the_concept(builtin):
  for pair in builtin.all_pairs("train") + builtin.all_pairs("eval"):
    assert pair.concept in pair.prompt
    assert pair.concept not in pair.neutral, pair
    if pair.category == "style":
      assert pair.prompt == f"{pair.neutral} in the style of {pair.concept}"
    else:
      phrase = knowledge.BUILTIN_NEUTRAL[pair.category]
      assert pair.prompt.replace(pair.concept, phrase) == pair.neutral, pair
  dog = builtin.pairs("a dog", "eval")[0]
  assert dog == PromptPair("a dog next to a wooden fence", "an animal next to a wooden fence",
                           "a dog", "animal")


def test_unknown_names_give_errors_that_list_the_valid_ones(builtin):
  with pytest.raises(ValueError, match=r"unknown concept 'a unicorn'.*'a dog'"):
    builtin.pairs("a unicorn")
  with pytest.raises(ValueError, match=r"unknown split 'test'.*'train', 'eval'"):
    builtin.pairs("a dog", "test")
  with pytest.raises(ValueError, match=r"unknown category 'music'.*'style'"):
    builtin.subset(categories=["music"])
  with pytest.raises(ValueError, match=r"unknown concept 'a unicorn'"):
    builtin.subset(concepts=["a unicorn"])


def test_subset_is_deterministic_and_keeps_the_first_items(builtin):
  small = builtin.subset(categories=["animal", "style"], per_category=2, prompts_per_concept=3)
  assert small.categories == ("style", "animal")     # the set's own order
  assert small.concepts == {"style": builtin.concepts["style"][:2],
                            "animal": builtin.concepts["animal"][:2]}
  assert small.pairs("a cat", "eval") == builtin.pairs("a cat", "eval")[:3]
  again = builtin.subset(categories=["animal", "style"], per_category=2, prompts_per_concept=3)
  assert again == small
  only = builtin.subset(concepts=["a tiger", "mount fuji"])
  assert only.concepts == {"place": ("mount fuji",), "animal": ("a tiger",)}
  with pytest.raises(ValueError, match="per_category must be at least 1"):
    builtin.subset(per_category=0)


def test_knowledge_set_rejects_a_concept_missing_from_its_prompt():
  bad = PromptPair("a cat on a mat", "an animal on a mat", "a dog", "animal")
  with pytest.raises(ValueError, match="'a dog' does not occur in its prompt 'a cat on a mat'"):
    KnowledgeSet("bad", ("animal",), {"animal": ("a dog",)}, {"a dog": [bad]}, {"a dog": []})


def write_lock(root, skip=()):
  """A made-up LocK folder (lines invented for this test), in the release's layout."""
  files = {
      "animals/animals.txt": "a wombat\nan axolotl\n\n",
      "animals/train_prompts.txt": "asleep on a log\nin the moonlight\n",
      "animals/eval_prompts.txt": "\ufeffas a tin toy\n",
      "places/places.txt": "the leaning tower of pisa\n",
      "places/train_prompts.txt": "seen from a balloon\n",
      "places/eval_prompts.txt": "drawn in chalk\n",
      "celebrities/celebrities.txt": "ada lovelace\n",
      "celebrities/train_prompts.txt": "holding a teacup\n",
      "celebrities/eval_prompts.txt": "on a stamp\n",
      "copyrights/copyrights.txt": "the pink panther\n",
      "copyrights/train_prompts.txt": "on a unicycle\n",
      "copyrights/eval_prompts.txt": "as a wind-up toy\n",
      "safety/safety.txt": "a person juggling torches\n",
      "safety/train_prompts.txt": ", in crayon style\nbehind frosted glass\n",
      "safety/eval_prompts.txt": ", as a mosaic\n",
      "style/wikiart_artists.txt": "hilma af klint\nalbrecht durer\n",
      "style/wikiart_artists_tiny_0.9_th.txt": "albrecht durer\n",
      "style/train_prompts.txt": "a teapot on a windowsill\n",
      "style/eval_prompts.txt": "a goat on a hill\nthree pears\n",
  }
  for name, text in files.items():
    if name not in skip:
      (root / name).parent.mkdir(parents=True, exist_ok=True)
      (root / name).write_text(text, encoding="utf-8")
  return root


def test_load_lock_parses_the_release_layout(tmp_path):
  lock = knowledge.load_lock(write_lock(tmp_path))
  assert lock.categories == knowledge.PAPER_CATEGORIES
  assert lock.concepts["animal"] == ("a wombat", "an axolotl")
  assert lock.concepts["style"] == ("hilma af klint", "albrecht durer")
  # Plain suffixes after a space; the neutral phrase replaces the concept.
  assert lock.pairs("an axolotl", "train") == [
      PromptPair("an axolotl asleep on a log", "an animal asleep on a log", "an axolotl", "animal"),
      PromptPair("an axolotl in the moonlight", "an animal in the moonlight", "an axolotl",
                 "animal")]
  assert lock.pairs("a wombat", "eval")[0].prompt == "a wombat as a tin toy"   # BOM stripped
  assert lock.pairs("ada lovelace", "eval")[0].neutral == "a person on a stamp"
  assert lock.pairs("the pink panther", "train")[0].neutral == "a character on a unicycle"
  assert lock.pairs("the leaning tower of pisa", "eval")[0].neutral == "a place drawn in chalk"
  # Comma suffixes attach directly.
  safety = lock.pairs("a person juggling torches", "train")
  assert [p.prompt for p in safety] == ["a person juggling torches, in crayon style",
                                        "a person juggling torches behind frosted glass"]
  assert safety[0].neutral == "a person, in crayon style"
  # Style: the clause is appended to base prompts and dropped for the neutral prompt.
  assert lock.pairs("albrecht durer", "eval") == [
      PromptPair("a goat on a hill in the style of albrecht durer", "a goat on a hill",
                 "albrecht durer", "style"),
      PromptPair("three pears in the style of albrecht durer", "three pears", "albrecht durer",
                 "style")]


def test_load_lock_options(tmp_path):
  root = write_lock(tmp_path)
  lock = knowledge.load_lock(root, categories=["style", "safety"],
                             artists_file="wikiart_artists_tiny_0.9_th.txt",
                             neutral={"safety": "someone"})
  assert lock.categories == ("style", "safety")
  assert lock.concepts["style"] == ("albrecht durer",)
  assert lock.pairs("a person juggling torches", "eval")[0].neutral == "someone, as a mosaic"
  with pytest.raises(ValueError, match="unknown category 'animals'"):
    knowledge.load_lock(root, categories=["animals"])


def test_load_lock_missing_file_names_it_and_the_layout(tmp_path):
  root = write_lock(tmp_path, skip=("copyrights/eval_prompts.txt",))
  with pytest.raises(FileNotFoundError) as error:
    knowledge.load_lock(root)
  message = str(error.value)
  assert "copyrights/eval_prompts.txt" in message
  assert "style/wikiart_artists.txt" in message and "animals/animals.txt" in message
  assert knowledge.load_lock(root, categories=["animal"]).all_concepts == ("a wombat", "an axolotl")


def test_shapes_set_follows_the_world():
  shapes = plugin.shapes(train_per_concept=4, eval_per_concept=5)
  assert shapes.categories == world.CATEGORIES
  assert shapes.concepts == world.CONCEPTS
  for category in world.CATEGORIES:
    for concept in world.CONCEPTS[category]:
      train, evals = shapes.pairs(concept, "train"), shapes.pairs(concept, "eval")
      # The first 4 distinct pairs (issue 19, item 3: this pinned the first 4 draws, repeats and all).
      drawn = list(dict.fromkeys(world.prompt_pairs(category, concept, 64, 0)))[:4]
      assert [(p.prompt, p.neutral) for p in train] == drawn
      assert len(evals) == 5 and len({p.prompt for p in evals}) == 5
      assert not {p.prompt for p in train} & {p.prompt for p in evals}
      assert all(p.prompt != p.neutral and p.category == category for p in train + evals)


# ------------------------------------------------------------------ prompts per concept (issue 19, item 3)
def test_prompts_per_concept_is_honoured_by_the_shapes_set():
  shapes = knowledge.load_knowledge("shapes", prompts_per_concept=12)
  for concept in ("circle", "the sky", "on the left"):
    for split in knowledge.SPLITS:
      prompts = [p.prompt for p in shapes.pairs(concept, split)]
      assert len(prompts) == 12 and len(set(prompts)) == 12, (concept, split)
    train = {p.prompt for p in shapes.pairs(concept, "train")}
    assert not train & {p.prompt for p in shapes.pairs(concept, "eval")}


def test_shapes_set_says_plainly_where_the_world_has_too_few_captions():
  # A named character's caption is its name, a position and a place: 5 x 4 = 20 distinct captions
  # (its held-out place left out), so 16 train + 16 eval prompts cannot all be distinct.
  from configs import shapes as shapes_config
  from dit_jax.localize import job as localize
  config = shapes_config.get_config()
  chosen = config.knowledge
  chosen.update(dict(prompts_per_concept=16, concepts_per_category=0))
  with pytest.raises(ValueError, match=r"'shapes' has 10 train prompts for 'zork'.*=16"):
    localize.load_knowledge(chosen)
  chosen.categories = ("shape", "position")          # the other categories have them
  assert len(localize.load_knowledge(chosen).pairs("star", "eval")) == 16
  zork = knowledge.load_knowledge("shapes", prompts_per_concept=16)
  train, evals = ({p.prompt for p in zork.pairs("zork", split)} for split in knowledge.SPLITS)
  assert len(train) == len(evals) == 10 and not train & evals


def test_asking_for_more_prompts_than_a_set_has_is_an_error(builtin):
  with pytest.raises(ValueError, match=r"'builtin' has 9 train prompts for 'vincent van gogh'.*16"):
    builtin.subset(prompts_per_concept=16)
  # A set that makes prompts on demand (the Shapes world's) is asked for them by the job.
  from configs import shapes as shapes_config
  from dit_jax.localize import job as localize
  config = shapes_config.get_config()
  config.knowledge.update(dict(prompts_per_concept=12, categories=("shape",)))
  assert len(localize.load_knowledge(config.knowledge).pairs("circle", "eval")) == 12
