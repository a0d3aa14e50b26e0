"""Judges: the Shapes classifier, the Shapes caption parser, CLIP from a folder, the registry."""
import hashlib
import itertools

import numpy as np
import pytest

from dit_jax import knowledge

from dit_jax.localize import judges
from dit_jax.knowledge import PromptPair
from dit_jax.shapes import judge as judge_module, plugin, render, world  # noqa: F401  (plugin registers the judge)


def to_uint8(images):
  return np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def test_named_concepts_inverts_captions():
  for scene in world.scenes(11, 40, "any"):
    present = world.concepts_in(scene)
    for r in range(3):
      for neutral in itertools.combinations(sorted(present), r):
        expected = {c: k for c, k in present.items() if c not in neutral}
        assert judge_module.named_concepts(world.caption(scene, neutral)) == expected, (scene, neutral)
  assert judge_module.named_concepts("an orange shape in a place") == {"colour": "orange"}
  with pytest.raises(ValueError, match="not a Shapes caption.*unknown shape 'dog'"):
    judge_module.named_concepts("a red dog on the left in the sky")
  with pytest.raises(ValueError, match="no place"):
    judge_module.named_concepts("a red star on the left")


@pytest.fixture(scope="module")
def shapes_judge():
  return judges.make_judge("shapes")


def scene_pairs(scenes, category, wrong=False):
  """One PromptPair per scene naming its `category` concept (or, wrong=True, another one)."""
  pairs = []
  for scene in scenes:
    concept = world.concepts_in(scene)[category]
    if wrong:
      options = world.CONCEPTS[category]
      concept = options[(options.index(concept) + 1) % len(options)]
    pairs.append(PromptPair(world.caption(scene), world.neutral_caption(scene, category), concept,
                            category))
  return pairs


def test_shapes_judge_recognises_rendered_concepts(shapes_judge):
  scenes = world.scenes(3, 12, "train")
  images = to_uint8(render.render_batch(scenes))
  for category in ("place", "position"):
    right = shapes_judge.presence(images, scene_pairs(scenes, category))
    wrong = shapes_judge.presence(images, scene_pairs(scenes, category, wrong=True))
    assert right.shape == (12,) and right.min() > 0.8, (category, right)
    assert wrong.max() < 0.2, (category, wrong)
    assert shapes_judge.present(images, scene_pairs(scenes, category)).all()
  plain = [s for s in scenes if s.character is None]
  right = shapes_judge.presence(to_uint8(render.render_batch(plain)), scene_pairs(plain, "shape"))
  assert len(plain) >= 4 and right.mean() > 0.9


def test_shapes_judge_category_accuracy_measures_other_categories(shapes_judge):
  scenes = world.scenes(4, 12, "train")
  images = to_uint8(render.render_batch(scenes))
  captions = [world.caption(s) for s in scenes]
  accuracy = shapes_judge.category_accuracy(images, captions)
  assert set(accuracy) >= {"place", "position"} and min(accuracy.values()) > 0.9, accuracy
  # Captions of other scenes: the images no longer match what the prompts name.
  shuffled = shapes_judge.category_accuracy(images, captions[1:] + captions[:1])
  assert shuffled["place"] < 0.7 and shuffled["position"] < 0.7, shuffled


def test_shapes_judge_describe_records_hashes(shapes_judge):
  described = shapes_judge.describe()
  assert described["name"] == "shapes" and described["threshold"] == 0.5
  assert described["version"] == "dit_jax.shapes.judge/1"
  assert described["files"]["params.safetensors"] == shapes_judge.model.meta["params_sha256"]


def test_judges_reject_float_images_and_wrong_counts(shapes_judge):
  scenes = world.scenes(5, 2)
  pairs = scene_pairs(scenes, "place")
  with pytest.raises(ValueError, match="uint8 RGB images"):
    shapes_judge.presence(render.render_batch(scenes), pairs)
  with pytest.raises(ValueError, match="2 images but 1 prompt pairs"):
    shapes_judge.presence(to_uint8(render.render_batch(scenes)), pairs[:1])
  with pytest.raises(ValueError, match="no class 'a dog'"):
    shapes_judge.presence(to_uint8(render.render_batch(scenes[:1])),
                          [PromptPair("a dog", "an animal", "a dog", "place")])


def test_registry_plugs_in_a_subclass():
  @judges.register_judge("brightness")
  class Brightness(judges.Judge):
    def _presence(self, images, pairs):
      return images.mean(axis=(1, 2, 3)) / 255.0

  try:
    judge = judges.make_judge("brightness", threshold=0.4)
    images = np.zeros((2, 4, 4, 3), np.uint8)
    images[1] = 255
    pair = PromptPair("a lamp", "an object", "a lamp", "thing")
    assert judge.present(images, [pair, pair]).tolist() == [False, True]
    assert judge.describe()["name"] == "brightness" and judge.describe()["threshold"] == 0.4
  finally:
    del judges.JUDGES["brightness"]
  with pytest.raises(ValueError, match=r"unknown judge 'brightness'.*'clip', 'shapes'"):
    judges.make_judge("brightness")


def test_presence_outside_unit_interval_is_an_error():
  class Broken(judges.Judge):
    def _presence(self, images, pairs):
      return np.full(len(pairs), 2.0)

  pair = PromptPair("a lamp", "an object", "a lamp", "thing")
  with pytest.raises(ValueError, match="outside"):
    Broken().presence(np.zeros((1, 4, 4, 3), np.uint8), [pair])


# ------------------------------------------------------------------ CLIP, tiny and random
CONCEPTS = ("a dog", "a cat", "an owl")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
  import torch
  from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
  from tests.testutil import save_word_tokenizer
  folder = tmp_path_factory.mktemp("clip")
  tokenizer = save_word_tokenizer(folder, words=("a", "an", "photo", "of", "dog", "cat", "owl",
                                                 "in", "the", "style", "monet", "animal"))
  torch.manual_seed(0)
  text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
              num_attention_heads=2, max_position_embeddings=16, pad_token_id=0, eos_token_id=1,
              bos_token_id=1)
  vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=32, patch_size=8)
  CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(
      folder)
  CLIPImageProcessor(size={"shortest_edge": 32},
                     crop_size={"height": 32, "width": 32}).save_pretrained(folder)
  return folder


@pytest.fixture(scope="module")
def clip_judge(clip_folder):
  return judges.make_judge("clip", folder=clip_folder, candidates={"animal": CONCEPTS},
                           neutral={"animal": "an animal"})


def animal_pairs(concepts):
  return [PromptPair(f"{k} on a rug", "an animal on a rug", k, "animal") for k in concepts]


IMAGES = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)


NEUTRAL_TEXT = "a photo of an animal"


def clip_logits(judge, texts):
  """CLIP's own logits_per_image of IMAGES against `texts`, from its forward pass."""
  import torch
  tokens = judge.tokenizer(texts, padding=True, return_tensors="pt")
  pixels = judge.image_processor(images=list(IMAGES), return_tensors="pt")["pixel_values"]
  with torch.no_grad():
    return judge.model(**tokens, pixel_values=pixels).logits_per_image


def test_clip_presence_is_a_softmax_over_the_category_and_its_neutral_phrase(clip_judge):
  # Issue 19, item 4 (this test replaces one that pinned a softmax over the candidates alone, the
  # bug: with two concepts in a run, chance was the 0.5 threshold).
  import torch
  per_concept = np.stack([clip_judge.presence(IMAGES, animal_pairs([k] * 3)) for k in CONCEPTS], 1)
  assert per_concept.shape == (3, 3)
  texts = [f"a photo of {k}" for k in CONCEPTS] + [NEUTRAL_TEXT]
  logits = clip_logits(clip_judge, texts)
  expected = torch.softmax(logits, -1).numpy()
  np.testing.assert_allclose(per_concept, expected[:, :3], atol=1e-5)
  assert np.all(per_concept.sum(1) < 1 - 1e-3)          # the neutral phrase takes its share
  cosine = clip_judge.similarity(IMAGES, texts)
  np.testing.assert_allclose(cosine * clip_judge.model.logit_scale.exp().item(), logits.numpy(),
                             atol=1e-4)
  np.testing.assert_allclose(clip_judge.concept_similarity(IMAGES, animal_pairs(CONCEPTS)),
                             np.diag(cosine), atol=1e-6)


def test_clip_threshold_is_calibrated_on_neutral_prompt_images(clip_judge):
  pairs = animal_pairs(["a dog"] * 3)
  neutral_scores = clip_judge.presence(IMAGES, pairs)       # as if IMAGES came from neutral prompts
  try:
    clip_judge.calibrate({"animal": neutral_scores})
    threshold = float(np.quantile(neutral_scores, 0.95))
    assert clip_judge.threshold_for("animal") == pytest.approx(threshold)
    assert clip_judge.present(IMAGES, pairs).sum() == (neutral_scores >= threshold).sum() <= 1
    described = clip_judge.describe()
    assert described["calibration"]["animal"] == {
        "quantile": 0.95, "images": 3, "threshold": pytest.approx(threshold),
        "neutral_presence_mean": pytest.approx(float(neutral_scores.mean()))}
    assert described["candidates"]["animal"] == list(CONCEPTS)
    assert described["neutral_texts"]["animal"] == NEUTRAL_TEXT
  finally:
    clip_judge.calibrate({})                  # the module's judge back to its uncalibrated state
  assert clip_judge.threshold_for("animal") == 0.5 and clip_judge.describe()["calibration"] == {}


def test_a_run_judges_against_the_whole_category(clip_folder):
  from configs import pixart
  from dit_jax.localize import job as localize
  config = pixart.get_config()
  config.knowledge.update(dict(concepts_per_category=2, categories=("animal",)))
  config.judge.args.folder = str(clip_folder)
  judge = localize.make_judge(config.judge, localize.full_knowledge(config.knowledge))
  assert judge.candidates["animal"] == knowledge.BUILTIN_CONCEPTS["animal"]     # all 8, not 2
  assert judge.neutral_texts["animal"] == "a photo of an animal"
  assert localize.load_knowledge(config.knowledge).concepts["animal"] == knowledge.BUILTIN_CONCEPTS["animal"][:2]


def test_clip_judge_is_deterministic_and_described(clip_folder, clip_judge):
  pairs = animal_pairs(CONCEPTS)
  again = judges.CLIPJudge(clip_folder, candidates={"animal": CONCEPTS}, neutral={"animal": "an animal"})
  np.testing.assert_array_equal(clip_judge.presence(IMAGES, pairs), again.presence(IMAGES, pairs))
  described = clip_judge.describe()
  expected = hashlib.sha256((clip_folder / "model.safetensors").read_bytes()).hexdigest()
  assert described["files"]["model.safetensors"] == expected
  assert {"config.json", "preprocessor_config.json", "tokenizer.json"} <= set(described["files"])
  assert described["name"] == "clip" and described["threshold"] == 0.5
  assert described["version"].startswith("transformers ")
  assert clip_judge.text_for("style", "claude monet") == "a photo in the style of claude monet"


def test_clip_judge_candidates_come_from_pairs_when_not_given(clip_folder):
  judge = judges.CLIPJudge(clip_folder)
  with pytest.raises(ValueError, match="at least two candidate concepts"):
    judge.presence(IMAGES[:1], animal_pairs(["a dog"]))
  scores = judge.presence(IMAGES[:2], animal_pairs(["a dog", "a cat"]))
  assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


def test_clip_missing_folder_names_the_expected_files(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    judges.CLIPJudge(tmp_path / "nowhere")
  message = str(error.value)
  for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
    assert name in message


# ------------------------------------------------------------------ the verdict's inputs (issue 25)
def test_judges_state_chance_and_what_an_image_keeps_of_the_rest(shapes_judge, clip_judge):
  """The verdict's presence floor is the judge's chance, and its specificity test reads, per
  image, how much of the rest of the prompt survives (Judge.chance, Judge.context)."""
  for category, classes in world.JUDGE_CLASSES.items():
    assert shapes_judge.chance(category) == pytest.approx(1 / len(classes))
  scenes = world.scenes(4, 12, "train")
  images = to_uint8(render.render_batch(scenes))
  pairs = scene_pairs(scenes, "position")
  kept = shapes_judge.context(images, pairs)
  assert kept.shape == (12,) and np.nanmean(kept) > 0.9          # renders show what they name
  shifted = shapes_judge.context(np.roll(images, 1, axis=0), pairs)   # other scenes' images
  assert np.nanmean(shifted) < np.nanmean(kept) - 0.2
  # CLIP: one in the candidates and the neutral text; context = cosine to the neutral prompt,
  # from CLIP's own forward pass (logits_per_image / logit_scale).
  assert clip_judge.chance("animal") == pytest.approx(1 / (len(CONCEPTS) + 1))
  assert judges.Judge().chance("animal") is None and judges.Judge().context(IMAGES, []) is None
  pairs = animal_pairs(CONCEPTS)
  logits = clip_logits(clip_judge, [p.neutral for p in pairs])
  reference = np.diag(logits.numpy()) / clip_judge.model.logit_scale.exp().item()
  np.testing.assert_allclose(clip_judge.context(IMAGES, pairs), reference, atol=1e-5)
