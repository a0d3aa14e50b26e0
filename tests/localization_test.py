"""Localization scores and the intervention sweep on a tiny random PixArt pipeline."""
import numpy as np
import pytest

from dit_jax.localize import sweep
from dit_jax import blocks
from dit_jax.diffusion.concepts import ConceptNotFound
from dit_jax.pipeline.text2image import Text2Image
from tests.pipeline_test import flux_folder, pixart_folder  # noqa: F401  (fixtures)

PROMPTS = ["a dog in the snow", "a red car in the style of van gogh"]
CONCEPTS = ["dog", "van gogh"]
NEUTRAL = ["a person in the snow", "a red car"]
SIZE = (16, 16)


@pytest.fixture(scope="module")
def pipe(pixart_folder):  # noqa: F811
  folder, _ = pixart_folder
  return Text2Image("pixart", str(folder), num_steps=3, guidance_scale=4.5, max_sequence_length=12)


@pytest.fixture(scope="module")
def flux_pipe(flux_folder):  # noqa: F811
  """One FLUX-dev pipeline for the FLUX tests (its programs compile once: plain sampling and each
  sweep); none of them changes it."""
  folder, _ = flux_folder
  return Text2Image("flux", str(folder), num_steps=2, max_sequence_length=12)


@pytest.mark.slow
def test_scores_shape_and_aggregation(pipe):
  scores = sweep.concept_scores(pipe, PROMPTS, CONCEPTS, seeds=[0, 1], size=SIZE, batch_size=3)
  assert scores.shape == (4, 3, pipe.module.config.num_layers, 3)   # prompts x seeds, steps, blocks, variants
  assert np.all(scores >= 0) and np.all(scores.sum(axis=(1, 2)) > 0)
  # Batching does not change a row: prompt 1 / seed 0 alone gives the same scores.
  alone = sweep.concept_scores(pipe, PROMPTS[1:], CONCEPTS[1:], seeds=[0], size=SIZE)
  np.testing.assert_allclose(alone[0], scores[2], rtol=1e-5, atol=1e-7)
  ranking = blocks.rank_blocks(scores.mean(axis=(0, 1))[:, 0])
  assert sorted(ranking.tolist()) == list(range(pipe.module.config.num_layers))


def test_absent_concept_is_a_clear_error(pipe):
  with pytest.raises(ConceptNotFound, match=r"'cat'.*'a dog in the snow'"):
    sweep.concept_scores(pipe, PROMPTS[:1], ["cat"], seeds=[0], size=SIZE)


def test_plan_and_k():
  ranking = np.array([2, 0, 1])
  plan = sweep.plan_interventions(ranking, ks=[1, 2], random_draws=2, single_blocks=True)
  names = [i.name for i in plan]
  assert names[0] == "original" and "top-1" in names and "bottom-2" in names and "block 2" in names
  top2 = next(i for i in plan if i.kind == "top" and i.k == 2)
  assert top2.blocks == (0, 2)
  assert next(i for i in plan if i.kind == "reverse" and i.k == 2).blocks == (0, 2)
  assert blocks.resolve_k(0.3, 28) == 8 and blocks.resolve_k(5, 28) == 5
  with pytest.raises(ValueError):
    blocks.resolve_k(40, 28)


@pytest.mark.slow
def test_sweep_matches_plain_sampling(pipe):
  n = pipe.module.config.num_layers
  every = tuple(range(n))
  plan = [sweep.Intervention("none", 0, ()),
          sweep.Intervention("top", n, every),                  # neutral text everywhere
          sweep.Intervention("reverse", 0, (), reverse=True),   # neutral prompt, no concept
          sweep.Intervention("reverse", n, every, reverse=True),  # concept everywhere again
          sweep.Intervention("top", 1, (1,))]
  images = sweep.run_interventions(pipe, PROMPTS, NEUTRAL, [0], SIZE, plan, chunk=2)
  assert images.shape == (5, 2, 16, 16, 3) and images.dtype == np.uint8
  plain = pipe(PROMPTS, [0, 0], *SIZE)
  neutral = pipe(NEUTRAL, [0, 0], *SIZE)
  close = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max() <= 1   # uint8 rounding
  assert close(images[0], plain) and close(images[3], plain)
  assert close(images[1], neutral) and close(images[2], neutral)
  assert not close(images[4], plain)   # swapping one block changes the image


@pytest.mark.slow   # compiles a vmapped FLUX loop
@pytest.mark.parametrize("flux_folder", ["dev"], indirect=True)
def test_flux_sweep_runs_both_trajectories_in_one_batch(flux_pipe):
  pipe = flux_pipe
  n = pipe.module.config.num_blocks
  plan = [sweep.Intervention("none", 0, ()),
          sweep.Intervention("reverse", 0, (), reverse=True),   # the neutral prompt alone
          sweep.Intervention("top", 1, (0,))]
  prompts, neutral = ["a dog in the snow"], ["a cat in the snow"]
  images = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan)
  close = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max() <= 1
  assert close(images[0], pipe(prompts, [0], *SIZE)) and close(images[1], pipe(neutral, [0], *SIZE))
  assert not close(images[2], images[0])
  assert n == pipe.module.config.num_layers + pipe.module.config.num_single_layers


@pytest.mark.slow   # compiles a vmapped FLUX loop
@pytest.mark.parametrize("flux_folder", ["dev"], indirect=True)
def test_flux_pooled_swap_of_every_block_is_the_neutral_prompt(flux_pipe):
  pipe = flux_pipe
  every = tuple(range(pipe.module.config.num_blocks))
  plan = [sweep.Intervention("none", 0, ()), sweep.Intervention("top", len(every), every)]
  prompts, neutral = ["a dog in the snow"], ["a cat in the snow"]
  swapped = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan, swap_pooled=True)
  close = lambda a, b: np.abs(a.astype(int) - b.astype(int)).max() <= 1
  # K=0 keeps the concept's pooled vector; all blocks + pooled leaves nothing of the concept.
  assert close(swapped[0], pipe(prompts, [0], *SIZE))
  assert close(swapped[1], pipe(neutral, [0], *SIZE))
  kept = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan[1:])
  assert not close(kept[0], swapped[1])        # without the option the pooled vector stays


def test_pooled_swap_is_a_joint_attention_option(pipe):
  with pytest.raises(ValueError, match="swap_pooled is FLUX and SD3's option"):
    sweep.run_interventions(pipe, PROMPTS, NEUTRAL, [0], SIZE,
                                   [sweep.Intervention("none", 0, ())], swap_pooled=True)


@pytest.mark.slow   # compiles a vmapped FLUX loop twice
@pytest.mark.parametrize("flux_folder", ["dev"], indirect=True)
def test_flux_residual_swap_is_chosen_explicitly_and_differs(flux_pipe):
  pipe = flux_pipe
  plan = [sweep.Intervention("none", 0, ()), sweep.Intervention("top", 1, (0,))]
  prompts, neutral = ["a dog in the snow"], ["a cat in the snow"]
  default = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan)
  attention = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan, flux_swap="attention")
  residual = sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan, flux_swap="residual")
  np.testing.assert_array_equal(default, attention)          # the paper's swap is the default
  np.testing.assert_array_equal(residual[0], attention[0])   # K=0 is plain sampling either way
  assert np.abs(residual[1].astype(int) - attention[1].astype(int)).max() > 1


def test_flux_swap_names_are_checked(pipe):
  none = [sweep.Intervention("none", 0, ())]
  with pytest.raises(ValueError, match="flux_swap is FLUX's option"):
    sweep.run_interventions(pipe, PROMPTS, NEUTRAL, [0], SIZE, none, flux_swap="residual")
  with pytest.raises(ValueError, match=r"flux_swap='stream'.*\['attention', 'residual'\]"):
    sweep.intervention_sweep("flux", None, flux_swap="stream")


def test_the_sweep_compiles_once_per_run_not_once_per_concept(pixart_folder):  # noqa: F811
  pipe = Text2Image("pixart", str(pixart_folder[0]), num_steps=3, max_sequence_length=12)
  traces = []
  build = pipe.loop

  def counting_loop(shape):
    loop = build(shape)
    return lambda *args: (traces.append(shape), loop(*args))[1]   # runs once per trace

  pipe.loop = counting_loop
  plan = [sweep.Intervention("none", 0, ()), sweep.Intervention("top", 1, (0,))]
  for prompts, neutral in [(PROMPTS, NEUTRAL), (PROMPTS[::-1], NEUTRAL[::-1])]:   # two concepts
    sweep.run_interventions(pipe, prompts, neutral, [0], SIZE, plan, chunk=2)
  assert len(traces) == 1


# ------------------------------------------------------------------ random-K draws (issue 19, item 2)
def random_sets(plan, kind="random"):
  return [i.blocks for i in plan if i.kind == kind]


def test_random_draws_are_per_concept_reproducible_and_independent():
  """Issue 25: the draws sample the null distribution of K-block sets, so they are independent
  and uniform; the old "balanced" scheme took consecutive sets from one permutation, which made
  every second pair of sets disjoint (complements at K = n / 2) and the draws dependent."""
  ranking = np.arange(12)
  plan = lambda concept, seed=0, **kw: sweep.plan_interventions(
      ranking, [6], random_draws=400, seed=seed, concept=concept, **kw)
  circle, red = random_sets(plan("circle")), random_sets(plan("red"))
  assert len(circle) == 400 and circle == random_sets(plan("circle"))  # reproducible
  assert circle != red                                                 # drawn per concept
  assert random_sets(plan("circle", seed=1)) != circle                 # and per config seed
  # Two independent 6-of-12 sets are disjoint with probability 1 / C(12, 6) = 1 / 924.
  disjoint = [not set(a) & set(b) for a, b in zip(circle[::2], circle[1::2])]
  assert np.mean(disjoint) < 0.02
  counts = np.bincount(np.concatenate(circle), minlength=12)          # uniform over blocks
  assert abs(counts / len(circle) - 0.5).max() < 0.1, counts
  assert any(set(d) & set(ranking[:6].tolist()) for d in circle)      # by default a draw may overlap


def test_an_intervention_asked_for_twice_is_sampled_once(pipe):
  """Draws with replacement repeat sets: the sweep samples each distinct one once and hands its
  images to every row that asked (the same noise gives the same images)."""
  calls = []
  program = pipe.program
  pipe.program = lambda key, build: (lambda *a: (calls.append(a[4].shape[0]), program(key, build)(*a))[1])
  plan = [sweep.Intervention("none", 0, ()), sweep.Intervention("top", 1, (0,)),
          sweep.Intervention("random", 1, (0,), draw=3)]
  images = sweep.run_interventions(pipe, PROMPTS, NEUTRAL, [0], SIZE, plan, chunk=4)
  pipe.program = program
  assert len(images) == 3 and sum(calls) == 2
  np.testing.assert_array_equal(images[1], images[2])
  alone = sweep.run_interventions(pipe, PROMPTS, NEUTRAL, [0], SIZE, plan[1:2], chunk=4)
  np.testing.assert_array_equal(images[2], alone[0])


def test_random_draws_can_exclude_the_top_k():
  ranking = np.array([5, 3, 11, 0, 1, 2, 4, 6, 7, 8, 9, 10])
  plan = sweep.plan_interventions(ranking, [3, 4], random_draws=10, concept="x",
                                         random_overlap=False)
  for k in (3, 4):
    top = set(ranking[:k].tolist())
    draws = [i for i in plan if i.kind == "random" and i.k == k]
    assert len(draws) == 10 and all(len(i.blocks) == k and not set(i.blocks) & top for i in draws)
  with pytest.raises(ValueError, match="outside the top-7"):
    sweep.plan_interventions(ranking, [7], random_draws=2, concept="x", random_overlap=False)


# ------------------------------------------------------------------ reverse controls (issue 19, item 5)
def test_reverse_has_random_k_draws_and_the_neutral_baseline():
  ranking = np.arange(12)
  plan = sweep.plan_interventions(ranking, [2, 4], random_draws=6, reverse_draws=3,
                                         concept="circle")
  neutral = [i for i in plan if i.kind == "neutral"]
  assert len(neutral) == 1 and neutral[0].blocks == () and neutral[0].reverse   # neutral everywhere
  for k in (2, 4):
    forward = [i.blocks for i in plan if i.kind == "random" and i.k == k]
    backward = [i for i in plan if i.kind == "reverse_random" and i.k == k]
    # The concept only in the first 3 random-K draws' blocks: paired with the forward draws.
    assert [i.blocks for i in backward] == forward[:3] and all(i.reverse for i in backward)
    assert [i.draw for i in backward] == [0, 1, 2]
  with pytest.raises(ValueError, match="reverse_draws=7.*first of the 6"):
    sweep.plan_interventions(ranking, [2], random_draws=6, reverse_draws=7)
