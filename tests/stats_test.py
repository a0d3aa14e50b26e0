"""Statistics of the localization summary (issue 20): intervals, paired tests, the depth-matched
control, and a verdict that can say no. References are hand-computed or textbook (t-interval,
exhaustive sign flips), not the code under test."""
import itertools
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from dit_jax.verdict import summary, stats, sets
from dit_jax.localize import sweep
from dit_jax.report import tables


# ------------------------------------------------------------------ bootstrap intervals
def test_bootstrap_interval_contains_the_mean_shrinks_with_n_and_matches_the_t_interval():
  rng = np.random.default_rng(0)
  small, large = rng.normal(0.5, 0.2, 20), rng.normal(0.5, 0.2, 400)
  for sample in (small, large):
    low, high = stats.bootstrap_interval(sample)
    assert low < sample.mean() < high
  width = lambda x: np.subtract(*stats.bootstrap_interval(x)[::-1])
  assert width(large) < 0.5 * width(small)                      # ~ 1 / sqrt(n): 4.5x narrower
  # For a large normal sample the bootstrap interval is the textbook mean +- t * standard error.
  t_low, t_high = scipy_stats.t.interval(0.95, len(large) - 1, large.mean(), scipy_stats.sem(large))
  assert stats.bootstrap_interval(large) == pytest.approx((t_low, t_high), abs=0.004)
  assert stats.bootstrap_interval(large) == stats.bootstrap_interval(large)   # fixed seed


def test_bootstrap_interval_degenerate_samples():
  # Issue 25: no zero-width "1.00 [1.00, 1.00]" where every unit agrees. At 0 or 1 the Wilson
  # interval of that proportion (by hand: n = 6, z = 1.96 gives [0.6097, 1]); elsewhere none.
  assert stats.bootstrap_interval([0.7] * 6) is None
  low, high = stats.bootstrap_interval([1.0] * 6)
  assert low == pytest.approx(6 / (6 + 1.959964 ** 2), abs=1e-6) and high == pytest.approx(1.0)
  assert stats.bootstrap_interval([0.0] * 6)[0] == pytest.approx(0.0, abs=1e-12)
  assert stats.bootstrap_interval([0.7]) is None                # one unit: no spread to resample
  low, high = stats.bootstrap_interval([1, 1, 1, 1, 1, 0.0])    # BCa's jackknife is lopsided here
  assert np.isfinite([low, high]).all() and low < 5 / 6 <= high <= 1
  with pytest.raises(ValueError, match="one value per unit"):
    stats.bootstrap_interval(np.zeros((2, 3)))


# ------------------------------------------------------------------ paired tests
def exhaustive_sign_flip_p(d):
  """P(mean of sign-flipped d >= observed mean) over all 2^n flips, by enumeration."""
  d = np.asarray(d, float)
  flips = np.array(list(itertools.product([1, -1], repeat=len(d))))
  return np.mean((flips * d).mean(axis=1) >= d.mean() - 1e-12)


def test_paired_permutation_p_is_the_exhaustive_sign_flip_test():
  for d in ([0.5, -0.1, 0.5, -0.1, 0.5, -0.1], [0.3, 0.1, -0.2, 0.4, 0.05, 0.2, -0.05, 0.1],
            np.random.default_rng(3).normal(0.1, 0.3, 10)):
    assert stats.paired_permutation_p(d) == pytest.approx(exhaustive_sign_flip_p(d))
  assert stats.paired_permutation_p([0.5, -0.1] * 3) == pytest.approx(8 / 64)   # by hand
  assert stats.paired_permutation_p(np.zeros(12)) == pytest.approx(1.0)   # top-K == random-K
  strong = np.random.default_rng(1).uniform(0.2, 0.6, 20)                 # every unit drops more
  assert stats.paired_permutation_p(strong) < 0.01
  assert stats.paired_permutation_p([]) is None


def test_draw_level_p_by_hand():
  assert stats.draw_level_p(0.5, [0.1, 0.6, 0.5, 0.2]) == pytest.approx((1 + 2) / 5)   # 0.6, 0.5
  assert stats.draw_level_p(0.5, [0.1] * 20) == pytest.approx(1 / 21)     # the floor, 0.048
  assert stats.draw_level_p(0.5, [0.9] * 6) == pytest.approx(1.0)
  assert stats.draw_level_p(0.5, []) is None


def test_compare_pairs_units_and_averages_draws():
  top = np.array([0.5, 0.4, 0.6])
  control = np.array([[0.1, 0.0, 0.2], [0.3, 0.2, 0.0]])   # 2 draws x 3 units
  result = stats.compare(top, control)
  assert result["drop"] == pytest.approx(0.8 / 6)
  assert result["difference"] == pytest.approx((0.3 + 0.3 + 0.5) / 3)   # per unit: top - mean draw
  assert result["p"] == pytest.approx(1 / 8)                              # all 3 positive of 2^3
  assert result["p_draws"] == pytest.approx(1 / 3)                        # neither draw reaches 0.5
  assert result["difference_interval"][0] <= result["difference"] <= result["difference_interval"][1]


# ------------------------------------------------------------------ depth-matched control
def per_third(blocks, num_blocks):
  return [len(set(blocks) & set(third.tolist())) for third in sweep.depth_thirds(num_blocks)]


def test_depth_thirds():
  assert [t.tolist() for t in sweep.depth_thirds(12)] == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                                 [8, 9, 10, 11]]
  assert [len(t) for t in sweep.depth_thirds(28)] == [10, 9, 9]      # PixArt
  assert [len(t) for t in sweep.depth_thirds(57)] == [19, 19, 19]    # FLUX 19 + 38


@pytest.mark.parametrize("num_blocks,ranking_seed,k", [(12, 0, 2), (12, 1, 4), (12, 2, 6), (28, 3, 8),
                                                       (57, 4, 6)])
def test_depth_matched_draws_have_the_top_k_profile_and_are_reproducible(num_blocks, ranking_seed, k):
  ranking = np.random.default_rng(ranking_seed).permutation(num_blocks)
  top = ranking[:k].tolist()
  plan = lambda concept, depth_draws=8, **kw: sweep.plan_interventions(
      ranking, [k], random_draws=5, concept=concept, depth_draws=depth_draws, **kw)
  draws = random_sets(plan("circle"), "depth_random")
  assert len(draws) == 8 and draws == random_sets(plan("circle"), "depth_random")
  if len(set(draws)) > 1:    # (a top-K that fills two thirds' spare room leaves one possible set)
    assert draws != random_sets(plan("red"), "depth_random")               # drawn per concept
  assert all(per_third(d, num_blocks) == per_third(top, num_blocks) for d in draws)
  # The random-K draws are the same with or without depth-matched draws (their own stream).
  assert random_sets(plan("circle")) == random_sets(plan("circle", depth_draws=0))
  assert not random_sets(plan("circle", depth_draws=0), "depth_random")


def random_sets(plan, kind="random"):
  return [i.blocks for i in plan if i.kind == kind]


def test_depth_matched_draws_avoid_the_top_k_where_a_third_has_room():
  ranking = np.array([0, 1, 5, 9, 2, 3, 4, 6, 7, 8, 10, 11])    # top-4: two early, one middle, one late
  sets, overlap = sweep.draw_depth_matched_sets(ranking, 4, 6, [0, 1])
  assert not overlap and all(not set(s) & {0, 1, 5, 9} for s in sets)
  assert all(set(s) & {0, 1, 2, 3} == {2, 3} for s in sets)    # the only two other early blocks
  # Top-6 holds all four early blocks: that third cannot avoid them, and says so.
  sets, overlap = sweep.draw_depth_matched_sets(ranking, 6, 6, [0, 1])
  assert overlap and all({0, 1, 2, 3} <= set(s) and not set(s) & {5, 9} for s in sets)
  with pytest.raises(ValueError, match="depth_draws=-1"):
    sweep.plan_interventions(ranking, [2], random_draws=2, depth_draws=-1)
  name = [i.name for i in sweep.plan_interventions(ranking, [2], 2, depth_draws=2)
          if i.kind == "depth_random"]
  assert name == ["depth-random-2 #0", "depth-random-2 #1"]


# ------------------------------------------------------------------ the verdict
def unit_row(kind, k, scores, draw=0, concept="x", category="c", blocks=()):
  return {"concept": concept, "category": category, "kind": kind, "k": k, "draw": draw,
          "blocks": list(blocks), "presence": float(np.mean(scores)), "other": {},
          "scores": [float(s) for s in scores]}


def verdict_rows(top_scores, draw_drops=(0.0, 0.05, 0.1, 0.15, 0.2, 0.1)):
  """6 units at presence 0.9; top-K as given; random-K draws each lowering every unit by a drop."""
  rows = [unit_row("none", 0, [0.9] * 6), unit_row("top", 2, top_scores, blocks=(0, 1)),
          unit_row("neutral", 0, [0.1, 0.2, 0.1, 0.0, 0.1, 0.2])]
  rows += [unit_row("random", 2, [0.9 - drop] * 6, draw=d, blocks=(d, d + 1))
           for d, drop in enumerate(draw_drops)]
  return rows


def test_verdict_says_no_when_top_k_is_within_the_random_noise_despite_a_2x_ratio():
  """The key test: top-K removes the concept from half of the images (mean drop 0.3, three times
  random-K's 0.1), so the old rule (top >= 2x random, >= 0.05) said "localized"; on the units the
  effect is three images out of six, which a sign-flip test cannot tell from chance (p = 8/64)."""
  (entry,) = summary.summarize(verdict_rows([0.3, 0.9, 0.3, 0.9, 0.3, 0.9]))
  assert entry["top_drop"] == pytest.approx(0.3) and entry["random_drop"] == pytest.approx(0.1)
  assert entry["top_over_random"] == pytest.approx(3.0)              # the old rule's "yes"
  assert entry["p_random"] == pytest.approx(8 / 64)
  low, high = entry["top_minus_random_interval"]
  assert low <= 0.2 <= high
  assert entry["localized"] is False
  # The same mean drop on every image: the unit-level test (now secondary) is significant, but
  # top-K beats 6 random sets, which cannot make it unusual among K-sets (p set = 1/7): issue 25.
  (entry,) = summary.summarize(verdict_rows([0.6, 0.62, 0.58, 0.6, 0.61, 0.59]))
  assert entry["p_random"] == pytest.approx(1 / 64) and entry["top_minus_random_interval"][0] > 0
  assert entry["tests"]["removal"]["p"] == pytest.approx(1 / 7)
  assert entry["tests"]["removal"]["beats"] == 1.0 and entry["tests"]["floor"]["holds"]
  assert entry["removable"] is False and entry["localized"] is False
  assert entry["p_random_draws"] == pytest.approx(1 / 7)   # 6 draws: the draw-level floor, reported


def test_summary_entries_carry_intervals_and_both_p_values(tmp_path):
  rows = verdict_rows([0.5, 0.6, 0.4, 0.7, 0.5, 0.6])
  rows += [unit_row("depth_random", 2, [0.85, 0.8, 0.9, 0.7, 0.85, 0.8], draw=d, blocks=(1, 4))
           for d in range(3)]
  (entry,) = tables.write_summary(rows, str(tmp_path))
  assert entry["units"] == 6 and entry["depth_draws"] == 3 and entry["depth_overlap"] is True
  assert entry["depth_drop"] == pytest.approx(0.9 - np.mean([0.85, 0.8, 0.9, 0.7, 0.85, 0.8]))
  assert entry["random_drop_interval"] is None                  # no spread: no interval
  assert entry["original_interval"] == pytest.approx(stats.wilson(0.9 * 6, 6))   # presence: Wilson
  for key in ("top_drop", "depth_drop", "top_minus_random", "top_minus_depth"):
    low, high = entry[f"{key}_interval"]
    assert low <= entry[key] + 1e-12 and entry[key] <= high + 1e-12, key
  # top - depth per unit: (0.9 - top) - (0.9 - depth) = depth - top, by hand.
  by_hand = np.array([0.85, 0.8, 0.9, 0.7, 0.85, 0.8]) - np.array([0.5, 0.6, 0.4, 0.7, 0.5, 0.6])
  assert entry["top_minus_depth"] == pytest.approx(by_hand.mean())
  assert entry["p_depth"] == pytest.approx(exhaustive_sign_flip_p(by_hand))
  assert entry["p_depth_draws"] == pytest.approx(1 / 4)
  assert json.loads((tmp_path / "summary.json").read_text()) == [entry]
  text = (tmp_path / "summary.txt").read_text()
  assert f"{entry['top_drop']:+.2f} [{entry['top_drop_interval'][0]:+.2f}, " in text
  assert "p draws" in text and "permutation test over units" in text
  assert sets.RULE.splitlines()[0] in text
  assert "| p set | p adj |" in tables.markdown_statistics([entry])


def test_no_verdict_without_per_image_scores():
  rows = verdict_rows([0.6] * 6)
  for r in rows:
    del r["scores"]                       # rows of a run from before per-image scores were kept
  (entry,) = summary.summarize(rows)
  assert entry["top_drop"] == pytest.approx(0.3) and entry["top_drop_interval"] is None
  assert entry["p_random"] is None and entry["localized"] is None


def test_a_presence_interval_is_at_least_as_wide_as_a_proportion_of_its_units():
  """Issue 25: eight images that all show the concept with probability ~0.99999 gave
  "1.00 [1.00, 1.00]"; a presence read off 8 images is at least as uncertain as 8/8 (Wilson:
  [0.676, 1] by hand, 8 / (8 + 1.96^2) = 0.6757)."""
  low, high = stats.presence_interval([0.99999, 0.99998, 1.0, 0.99999, 1.0, 0.99997, 1.0, 1.0])
  assert low == pytest.approx(0.6756, abs=2e-3) and high == pytest.approx(1.0)
  spread = np.linspace(0.1, 0.9, 40)            # never narrower than the bootstrap's either
  (low, high), (boot_low, boot_high) = stats.presence_interval(spread), stats.bootstrap_interval(spread)
  assert low <= boot_low and high >= boot_high
