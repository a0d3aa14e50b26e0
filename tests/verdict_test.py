"""The set-level verdict (dit_jax/verdict/sets.py, issue 25): its false-positive rate under a placebo,
its power where blocks do carry the concept, and the pieces it is built from."""
import numpy as np
import pytest
from scipy import stats as scipy_stats

from studies import sampled_placebo
from dit_jax.verdict import summary, stats, sets


def test_set_level_p_counts_ties_against_top_k():
  assert sets.set_level_p(0.5, [0.1, 0.2, 0.3]) == pytest.approx(1 / 4)
  assert sets.set_level_p(0.5, [0.1, 0.5, 0.7]) == pytest.approx(3 / 4)


def test_benjamini_hochberg_matches_scipy():
  p = [0.01, 0.04, 0.03, None, 0.2, 0.001]
  adjusted = sets.benjamini_hochberg(p)
  reference = scipy_stats.false_discovery_control([x for x in p if x is not None], method="bh")
  assert adjusted[3] is None
  np.testing.assert_allclose([a for a in adjusted if a is not None], reference)


def test_hierarchical_bootstrap_resamples_concepts_then_prompts_then_seeds():
  sizes = [(3, 2), (2, 2)]                     # concept 0: 3 prompts x 2 seeds; concept 1: 2 x 2
  weights = sets.hierarchical_weights(sizes, resamples=500)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0)
  # A resample holds whole concepts: each concept's mass is a multiple of 1/2 (two slots).
  mass = np.stack([weights[:, :6].sum(1), weights[:, 6:].sum(1)], 1)
  np.testing.assert_allclose(mass * 2, np.round(mass * 2), atol=1e-9)
  assert {0.0, 0.5, 1.0} <= set(np.round(mass[:, 0], 9))
  # Within a concept, a prompt's mass is a multiple of (concept's slots) / (2 * prompts): seeds are
  # resampled inside their prompt, never across prompts.
  prompt_mass = weights[:, :6].reshape(-1, 3, 2).sum(-1) * 2 * 3
  np.testing.assert_allclose(prompt_mass, np.round(prompt_mass), atol=1e-9)


def test_a_random_top_k_is_ranked_uniformly_among_sets():
  """Under the placebo the raw set-level p is uniform (a little conservative with ties): its
  rate below 0.05 stays at 0.05 up to Monte-Carlo error, with and without a dominant block."""
  for dominant in (0.1, 0.9):
    rng = np.random.default_rng(7)
    p = [e["tests"]["removal"]["p"] for _ in range(12)
         for e in sampled_placebo.verdict_entries(sampled_placebo.simulate_run(rng, dominant=dominant))]
    assert len(p) == 216
    assert np.mean(np.asarray(p) < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p)), dominant


@pytest.mark.slow
def test_placebo_false_positive_rate_is_held_at_five_percent():
  """The issue's test: over simulated placebo runs (six categories, K = 2, 4, 6, one dominant
  block), the share of runs where the verdict says "localized", "removable" or "sufficient" in
  any cell stays at or below 0.05 plus two Monte-Carlo standard errors."""
  result = sampled_placebo.simulated(60, seed=3)
  bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / 60)
  for flag, rate in result["rates"].items():
    assert rate["runs"] == 60 and rate["cells"] == 60 * 18
    assert rate["run_rate"] <= bound, (flag, rate)


def old_rule(entry: dict) -> bool:
  """The verdict before issue 25 (its LOCALIZED_RULE), from the secondary unit-level fields: top-K
  against the *mean* random set, per image."""
  interval = entry["top_minus_random_interval"]
  return bool(entry["original"] >= 0.2 and entry["p_random"] is not None
              and entry["p_random"] < stats.ALPHA and interval[0] > 0 and entry["top_drop"] >= 0.05)


@pytest.mark.slow
def test_the_old_rule_says_localized_on_a_placebo_where_the_new_one_does_not():
  """With one dominant block a random top-K that contains it beats the mean random set on every
  image, so the old rule said yes; among K-block sets it is not unusual (every set holding that
  block does as well), and the verdict says no. Through summary.summarize, as a run reports."""
  rng = np.random.default_rng(11)
  old, new = [], []
  for _ in range(4):
    rows = sampled_placebo.simulate_run(rng, ks=(2, 4), draws=40, reverse_draws=10)
    entries = summary.summarize(rows)
    old += [old_rule(e) for e in entries]
    new += [e["localized"] is True or e["removable"] is True for e in entries]
  assert sum(old) >= 0.15 * len(old), sum(old)     # the review measured 31-33 %
  assert not any(new)


def test_the_verdict_finds_blocks_that_do_carry_the_concept():
  """Power: where the ranking is the true one and several blocks share the concept, most cells
  are removable (a test that could only say no would pass the placebo tests)."""
  rng = np.random.default_rng(5)
  entries = sampled_placebo.verdict_entries(sampled_placebo.simulate_run(rng, placebo=False, dominant=0.3))
  assert np.mean([e["removable"] for e in entries]) >= 0.5


def test_presence_floor_and_specificity_decide():
  rng = np.random.default_rng(5)
  rows = sampled_placebo.simulate_run(rng, placebo=False, dominant=0.3, categories=1, ks=(4,))
  (entry,) = sampled_placebo.verdict_entries(rows)
  assert entry["tests"]["floor"]["holds"] and entry["removable"]
  # The rest of the image lost under top-K where the neutral prompt everywhere keeps it.
  for r in rows:
    if r["kind"] == "top":
      r["context"] = [0.0] * len(r["scores"])
  (entry,) = sampled_placebo.verdict_entries(rows)
  assert entry["tests"]["specificity"]["holds"] is False and entry["localized"] is False
  # A concept the model does not show (the original no higher than the neutral prompt): no verdict.
  for r in rows:
    if r["kind"] == "none":
      r["scores"] = next(x for x in rows if x["kind"] == "neutral")["scores"]
  (entry,) = sampled_placebo.verdict_entries(rows)
  assert entry["tests"]["floor"]["holds"] is False and entry["localized"] is None


def test_wilson_interval_matches_a_hand_computation():
  low, high = stats.wilson(8, 10)
  # p = 0.8, z = 1.96: (0.8 + 0.19208 -+ 1.96 * sqrt(0.016 + 0.009604)) / 1.38416
  assert low == pytest.approx((0.8 + 0.192073 - 1.959964 * np.sqrt(0.016 + 0.0096039)) / 1.384146, abs=1e-5)
  assert high == pytest.approx((0.8 + 0.192073 + 1.959964 * np.sqrt(0.016 + 0.0096039)) / 1.384146, abs=1e-5)


def test_the_reverse_gain_is_reported_without_random_sets_in_reverse():
  """configs/shapes.py runs top-K's reverse but no random sets in reverse (fewer than 20 could never
  say "sufficient"): the gain is still reported, the sufficiency test is left out, not failed."""
  rows = sampled_placebo.simulate_run(np.random.default_rng(3), placebo=False, categories=1, ks=(2,),
                              draws=20, reverse_draws=0)
  (entry,) = sampled_placebo.verdict_entries(rows)
  by_kind = {r["kind"]: np.asarray(r["scores"]) for r in rows if r["kind"] in ("reverse", "neutral")}
  assert entry["reverse_gain"] == pytest.approx(np.mean(by_kind["reverse"] - by_kind["neutral"]))
  assert entry["tests"]["sufficiency"] is None and entry["sufficient"] is None
  assert entry["removable"] is not None


def test_a_drop_in_one_image_does_not_make_a_set_removable():
  """top-K ranks first among the sets (p = 1 / 41) because of one image of six; the hierarchical
  bootstrap, which resamples prompts, leaves that image out often enough that the interval of
  top minus the mean set reaches 0: the verdict must not rest on one image."""
  rows = sampled_placebo.simulate_run(np.random.default_rng(0), placebo=False, categories=1, ks=(2,),
                              prompts=6, draws=40, reverse_draws=0)
  scores = {"none": [0.9] * 6, "neutral": [0.0] * 6, "top": [0.0] + [0.9] * 5}
  for r in rows:
    r["scores"] = scores.get(r["kind"], [0.9] * 6)
  (entry,) = sampled_placebo.verdict_entries(rows)
  assert entry["p_removal_adjusted"] < 0.05 and entry["tests"]["floor"]["holds"]
  assert entry["tests"]["removal"]["excess_interval"][0] <= 0
  assert entry["removable"] is False
