"""Withhold operators (config.withhold): what the selected blocks read instead of the concept prompt."""
import numpy as np
import pytest
import torch

from dit_jax.localize import withhold, sweep
from dit_jax.knowledge import KnowledgeSet, PromptPair
from dit_jax.pipeline.text2image import Text2Image
from tests.pipeline_test import pixart_folder  # noqa: F401  (fixture)

SIZE = (16, 16)


def pair(prompt, neutral, concept, category="thing"):
  return PromptPair(prompt, neutral, concept, category)


# Shapes prompts and what each operator makes of them, written out by hand.
PAIRS = [pair("a green circle at the top in the snow, striped style",
              "a green shape at the top in the snow, striped style", "circle"),
         pair("a red triangle at the top in the snow, solid style",
              "a red triangle at the top in the snow", "solid"),
         pair("an orange triangle on the left in the sky, checkered style",
              "an orange triangle on the left in a place, checkered style", "the sky"),
         pair("zork on the left in the desert", "zork in the desert", "on the left"),
         pair("a dog, a cat", "a cat", "a dog"),
         pair("a cat, a dog, a bird", "a cat, a bird", "a dog"),
         pair("the skyline and the sky", "the skyline and a place", "the sky")]
REMOVED = ["a green at the top in the snow, striped style",
           "a red triangle at the top in the snow, style",
           "an orange triangle on the left in, checkered style",
           "zork in the desert",
           "a cat",                 # no leading comma
           "a cat, a bird",         # no doubled comma
           "the skyline and"]       # whole words: "the skyline" keeps its "the sky"


def test_prompt_operators_give_the_expected_prompts():
  assert withhold.withheld_prompts(PAIRS, "neutral") == [p.neutral for p in PAIRS]
  assert withhold.withheld_prompts(PAIRS, "empty") == [""] * len(PAIRS)
  assert withhold.withheld_prompts(PAIRS, "removed") == REMOVED
  # The prompt operators need no model: replacement() hands their prompts on as they are.
  assert withhold.replacement(None, PAIRS, "removed", None, SIZE) == REMOVED


def test_an_unknown_operator_is_named():
  with pytest.raises(ValueError, match=r"withhold='zero': use one of \['neutral', 'empty', "
                                       r"'removed', 'mean'\]"):
    withhold.replacement(None, PAIRS, "zero", None, SIZE)
  with pytest.raises(ValueError, match="pass the knowledge set"):
    withhold.replacement(None, PAIRS, "mean", None, SIZE)


def test_mean_text_state_by_hand():
  # Two prompts of 2 and 1 tokens over 3 positions; position 2 is padding in both.
  states = {"caption": np.array([[[1.0], [2.0], [3.0]], [[5.0], [6.0], [7.0]]], np.float32),
            "caption_mask": np.array([[1, 1, 0], [1, 0, 0]], np.int32),
            "pooled": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
  mean = withhold.mean_text_state(states)
  np.testing.assert_array_equal(mean["caption"], [[[3.0], [2.0], [5.0]]])   # masked, masked, plain
  np.testing.assert_array_equal(mean["caption_mask"], [[1, 1, 0]])
  np.testing.assert_array_equal(mean["pooled"], [[2.0, 3.0]])
  assert mean["caption"].dtype == np.float32 and mean["caption_mask"].dtype == np.int32
  # Without a mask (FLUX, SD3) every position is a plain mean.
  plain = withhold.mean_text_state({"caption": states["caption"]})
  np.testing.assert_array_equal(plain["caption"], [[[3.0], [4.0], [5.0]]])


TRAIN = {"dog": [pair("a dog in the snow", "a person in the snow", "dog", "animal"),
                 pair("a red dog", "a red person", "dog", "animal")],
         "cat": [pair("a photo of a cat in the snow", "a photo of a person in the snow", "cat", "animal")]}
KNOWLEDGE = KnowledgeSet("tiny", ("animal",), {"animal": ("dog", "cat")}, TRAIN, TRAIN)


@pytest.fixture(scope="module")
def pipe(pixart_folder):  # noqa: F811
  folder, _ = pixart_folder
  return Text2Image("pixart", str(folder), num_steps=3, guidance_scale=4.5, max_sequence_length=12)


@pytest.mark.slow   # builds the tiny pipeline folder
def test_mean_is_the_mean_of_independently_encoded_states(pipe, pixart_folder):  # noqa: F811
  _, torch_pipe = pixart_folder
  pairs = KNOWLEDGE.pairs("dog", "eval")
  cond = withhold.replacement(pipe, pairs, "mean", KNOWLEDGE, SIZE)
  # Reference: diffusers encodes each train prompt alone; the mean is taken position by position
  # over the prompts whose mask keeps the position.
  prompts = [p.prompt for p in KNOWLEDGE.all_pairs("train")]
  encoded = []
  with torch.no_grad():
    for prompt in prompts:
      embeds, mask, _, _ = torch_pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                    clean_caption=False, max_sequence_length=12)
      encoded.append((embeds[0].numpy(), mask[0].numpy()))
  length, width = encoded[0][0].shape
  expected = np.zeros((length, width))
  expected_mask = np.zeros(length, np.int32)
  for s in range(length):
    kept = [e[s] for e, m in encoded if m[s]]
    expected[s] = np.mean(kept, axis=0) if kept else np.mean([e[s] for e, _ in encoded], axis=0)
    expected_mask[s] = int(bool(kept))
  assert cond["caption"].shape == (len(pairs), length, width)
  for row in range(len(pairs)):
    np.testing.assert_allclose(cond["caption"][row], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cond["caption_mask"][row], expected_mask)
  # Everything else is what any prompt's conditioning carries (negative prompt, micro-conditions).
  plain = pipe.conditioning([p.prompt for p in pairs], *SIZE)
  assert set(cond) == set(plain)
  for key in set(plain) - {"caption", "caption_mask"}:
    np.testing.assert_array_equal(cond[key], plain[key])


@pytest.mark.slow   # compiles the sweep
def test_neutral_is_todays_sweep_and_a_conditioning_dict_is_the_same_path(pipe):
  pairs = [pair("a dog in the snow", "a person in the snow", "dog"),
           pair("a red car in the style of van gogh", "a red car", "van gogh")]
  prompts = [p.prompt for p in pairs]
  plan = [sweep.Intervention("none", 0, ()), sweep.Intervention("top", 1, (1,)),
          sweep.Intervention("neutral", 0, (), reverse=True),
          sweep.Intervention("reverse", 1, (1,), reverse=True)]
  today = sweep.run_interventions(pipe, prompts, [p.neutral for p in pairs], [0, 1], SIZE, plan)
  neutral = withhold.replacement(pipe, pairs, "neutral", KNOWLEDGE, SIZE)
  np.testing.assert_array_equal(
      sweep.run_interventions(pipe, prompts, neutral, [0, 1], SIZE, plan), today)
  # "mean" hands run_interventions a conditioning dict (one row per prompt): given the neutral
  # prompts' own conditioning, that path draws the very same images.
  as_dict = pipe.conditioning([p.neutral for p in pairs], *SIZE)
  np.testing.assert_array_equal(
      sweep.run_interventions(pipe, prompts, as_dict, [0, 1], SIZE, plan), today)
  # Another operator is another image: the empty prompt in block 1 is not the neutral prompt.
  empty = sweep.run_interventions(pipe, prompts, withhold.replacement(
      pipe, pairs, "empty", KNOWLEDGE, SIZE), [0, 1], SIZE, plan)
  np.testing.assert_array_equal(empty[0], today[0])             # the original is untouched
  assert not np.array_equal(empty[2], today[2])


def test_a_mismatched_conditioning_dict_is_named():
  with pytest.raises(ValueError, match="2 prompts but 3 neutral prompts"):
    sweep.run_interventions(None, ["a", "b"], {"caption": np.zeros((3, 4, 5))}, [0], SIZE, [])
