"""The exact verdict (dit_jax/verdict/exact.py) on constructed runs whose truth is known: every K-set swept,
p the exact rank, a pooled rank-sum test with an exact null, a hierarchy that can say yes where a
block carries the concept and holds its false-positive rate under thousands of placebos, and a
specificity test that fails on a generic bottleneck. References are brute force (itertools), never
the module's own rule."""
import itertools
import json
import math
import os

import numpy as np
import pytest
from scipy import stats as scipy_stats

from configs import shapes
from dit_jax.verdict import exact, sets
from dit_jax.localize import sweep
from dit_jax.localize import stages
from tests.pixart_test import REPO

BLOCKS = 12


def run_rows(carriers: dict, ks=(1, 2), units: int = 4, seed: int = 0, damage: float = 0.0,
             effect: float = 0.6, noise: float = 0.05) -> list[dict]:
  """Rows of a run over every K-set of 12 blocks. carriers: concept -> (category, the blocks that
  carry it): a set lowers presence by `effect` times the share of the carriers it holds (and the
  rest of every other image by `damage` if it holds any); top-K is the carriers first."""
  rng = np.random.default_rng(seed)
  rows = []
  row = lambda concept, category, kind, k, blocks, scores, context, **extra: rows.append(dict(
      concept=concept, category=category, kind=kind, k=k, draw=extra.pop("draw", 0),
      blocks=list(blocks), scores=[float(x) for x in scores], context=[float(x) for x in context],
      seeds=1, chance=0.25, **extra))
  for concept, (category, carried) in carriers.items():
    base = np.clip(0.9 + noise * rng.standard_normal(units), 0, 1)
    context = np.full(units, 0.9)
    row(concept, category, "none", 0, (), base, context)
    row(concept, category, "neutral", 0, (), np.full(units, 0.05), context)
    for k in ks:
      images = {}
      for d, blocks in enumerate(itertools.combinations(range(BLOCKS), k)):
        held = len(set(blocks) & set(carried)) / len(carried)
        images[blocks] = (base - effect * held - noise * np.abs(rng.standard_normal(units)),
                          context - damage * (held > 0) * (np.arange(units) % 2 == 0))
        row(concept, category, "random", k, blocks, *images[blocks], draw=d, null="exact")
      order = list(carried) + [b for b in range(BLOCKS) if b not in carried]
      top = tuple(sorted(order[:k]))
      row(concept, category, "top", k, top, *images[top])
  return rows


def test_the_rank_sum_null_is_the_brute_force_distribution():
  for sizes in ((12,), (12, 12), (66, 12, 5), (4, 4, 4, 4)):
    sums = np.array([sum(c) for c in itertools.product(*[range(1, n + 1) for n in sizes])])
    for observed in (len(sizes), int(np.median(sums)), int(sums.max())):
      ranks = [observed - len(sizes) + 1] + [1] * (len(sizes) - 1)   # any split of the sum
      assert exact.rank_sum_p(ranks, sizes) == pytest.approx(np.mean(sums <= observed))


def test_p_is_the_exact_rank_among_every_set_with_ties_against_top():
  rows = run_rows({"a": ("shape", (3,))}, ks=(2,))
  (cell,) = exact.concept_cells(rows)
  drops = {tuple(r["blocks"]): np.mean(np.subtract(rows[0]["scores"], r["scores"]))
           for r in rows if r["kind"] == "random"}
  top = next(tuple(r["blocks"]) for r in rows if r["kind"] == "top")
  assert len(drops) == math.comb(BLOCKS, 2) and cell.exact
  assert cell.p() == pytest.approx(sum(d >= drops[top] - 1e-12 for d in drops.values()) / 66)


def test_a_concept_in_one_block_is_found_and_named():
  carriers = {"circle": ("shape", (2,)), "square": ("shape", (2,)), "red": ("colour", (5,)),
              "blue": ("colour", (5,))}
  result = exact.decide(run_rows(carriers, ks=(1,), effect=0.6))
  assert all(e["holds"] for e in result["primary"])
  for e in result["concept"]:
    # Alone, one concept among 12 single blocks cannot reach 0.05; pooled by category it can.
    assert e["p"] == pytest.approx(1 / 12) and not e["tested"]
  assert all(e["holds"] for e in result["category"])
  text = "\n".join(exact.answer(result))
  assert "circle: K=1 top {2}" in text and "cannot go below 0.083" in text


def test_specificity_fails_on_a_generic_bottleneck():
  """A block every concept needs and whose removal ruins half the images (a bottleneck, not
  knowledge): removable, but the equivalence test must say not specific. The earlier rule (not
  specific only where the excess damage's interval lies above 0) said "specific" here: with half
  the images undamaged, a resample of only those puts the interval's lower end at 0."""
  carriers = {c: (c, (4,)) for c in ("circle", "red", "solid", "the sky")}
  rows = run_rows(carriers, ks=(2,), damage=0.5)
  result = exact.decide(rows)
  for e in result["concept"]:
    assert e["specificity"]["holds"] is False
    assert e["localized"] is False
  specific = run_rows(carriers, ks=(2,), damage=0.0)
  assert all(e["specificity"]["holds"] for e in exact.decide(specific)["concept"])


def test_thousands_of_placebos_hold_the_rate_and_planted_effects_are_found():
  """Placebo: top-K a random set, re-ranked on the swept sets (10,000 runs). The per-run rate of
  any "removable" stays under 0.05 (upper 95% Clopper-Pearson bound) and the p-values are never
  more often small than uniform ones; the same config finds a planted effect."""
  carriers = {f"c{i}": (f"cat{i % 3}", (i % BLOCKS,)) for i in range(6)}
  rows = run_rows(carriers, ks=(1, 2), effect=0.5)
  placebo = exact.simulate(rows, 10_000, p_values=True)
  hits = placebo["removable"]["runs_with_any"]
  assert scipy_stats.beta.ppf(0.975, hits + 1, 10_000 - hits) < 0.05
  p_values = np.asarray(placebo["p_values"])
  for level in (0.02, 0.05, 0.1, 0.2, 0.5):
    assert np.mean(p_values <= level) <= level + 0.01
  planted = exact.simulate(rows, 2000, effect=0.5, seed=1)
  assert planted["removable"]["runs_with_any"] / 2000 >= 0.8


def test_one_block_tests_that_cannot_pass_do_not_dilute_the_others():
  """K = 1 with one concept per category can never pass (p >= 1/12): left out of the correction,
  the K = 2 cells at rank 1 of 66 still pass."""
  carriers = {c: (c, (b, b + 1)) for c, b in (("a", 0), ("b", 4), ("c", 8))}
  result = exact.decide(run_rows(carriers, ks=(1, 2), effect=0.4))
  at_2 = [e for e in result["concept"] if e["k"] == 2]
  assert all(e["p"] == pytest.approx(1 / 66) and e["removable"] for e in at_2)


def test_tests_that_cannot_pass_are_left_out_of_the_correction():
  """Six one-concept categories: at K = 1 every top block ranks first (p = 1/12, which cannot pass
  alone), at K = 2 the ranks are 1-3 of 66. Corrected with the K = 1 cells, no K = 2 cell would
  pass Benjamini-Hochberg (0.015 * 12 / 3 > 0.05); left out (Tarone), all six do."""
  keys = [(f"c{i}", f"cat{i}", k) for k in (1, 2) for i in range(6)]
  ranks = [1] * 6 + [1, 2, 1, 3, 1, 2]
  sizes = [12] * 6 + [66] * 6
  levels = exact.hierarchy(keys, ranks, sizes)
  assert all(levels["primary"][k][2] for k in (1, 2))
  assert all(levels["category"][(f"cat{i}", 2)][2] for i in range(6))
  assert all(levels["category"][(f"cat{i}", 1)][1] is None for i in range(6))   # not corrected


def test_the_default_config_sweeps_every_set_at_k_1_and_2():
  config = shapes.get_config().sweep
  ks = stages.grid(config, BLOCKS)
  assert 1 in ks
  plan = sweep.plan_interventions(
      np.arange(BLOCKS), ks, config.random_draws, reverse_draws=config.reverse_draws,
      exact_limit=config.exact_limit)
  for k in ks:
    sets = {i.blocks for i in plan if i.kind == "random" and i.k == k}
    assert sets == set(itertools.combinations(range(BLOCKS), k))
    assert all(i.null == "exact" for i in plan if i.kind == "random" and i.k == k)


def test_above_the_limit_sets_are_sampled_without_replacement():
  plan = sweep.plan_interventions(np.arange(BLOCKS), [5], 300, exact_limit=500)
  drawn = [i.blocks for i in plan if i.kind == "random"]
  assert len(drawn) == len(set(drawn)) == 300 and {i.null for i in plan if i.kind == "random"} == {"sampled"}


def test_the_power_effect_is_the_full_tables_median_localized_effect():
  """config.verdict.power_effect: the median over the localized cells of the fuller run, both
  replicates pooled, of top-K's drop minus the mean set's (what exact.simulate plants)."""
  with open(os.path.join(REPO, "results", "localize_shapes_full_both.json")) as f:
    stored = json.load(f)
  effects = exact.localized_effects(stored["exact"])
  assert len(effects) >= 3
  assert shapes.get_config().verdict.power_effect == pytest.approx(np.median(effects), abs=0.005)


def test_a_run_without_a_null_key_is_left_to_the_sampled_verdict():
  rows = run_rows({"a": ("shape", (3,))}, ks=(2,))
  for r in rows:
    r.pop("null", None)
  assert exact.decide(rows) is None
  assert sets.ALPHA == exact.ALPHA


def test_a_run_of_one_image_per_concept_is_summarized():
  """prompts_per_concept=1 and one seed: no unit-level test has two units to compare, so those are
  left out (they crashed the summary after the whole sweep had run) and the exact ranks remain."""
  from dit_jax.verdict import summary
  rows = run_rows({"a": ("shape", (3,))}, ks=(1,), units=1)
  for r in rows:
    r.update(presence=float(np.mean(r["scores"])), other={})
  (entry,) = summary.summarize(rows)
  assert entry["p_random"] is None and entry["p_set"] == pytest.approx(1 / 12)


def test_replicates_are_cells_of_their_own_pooled_by_the_rank_sum():
  """Two replicates of a concept (other noise, other prompts) each rank their own top-K among their
  own sets on their own original; the concept level pools the two ranks. Mixed into one cell,
  replicate 1's top-K was ranked among both replicates' 2 x 12 sets on replicate 2's original."""
  first = run_rows({"a": ("shape", (3,)), "b": ("shape", (5,))}, ks=(1,), seed=0)
  second = run_rows({"a": ("shape", (7,)), "b": ("shape", (5,))}, ks=(1,), seed=1)
  rows = first + [r | {"replicate": 1} for r in second]
  found = exact.decide(rows)
  a = [e for e in found["concept"] if e["concept"] == "a"]
  assert sorted((e["replicate"], tuple(e["blocks"]), e["sets"][0]) for e in a) == [(0, (3,), 12), (1, (7,), 12)]
  assert all(e["ranks"] == [1] for e in a)
  assert a[0]["p"] == pytest.approx(exact.rank_sum_p([1, 1], [12, 12]))     # 1/144: pooled
  assert found["primary"][0]["sets"] == [12] * 4
  assert set(found["floors"]) == {"a", "b", "a (replicate 2)", "b (replicate 2)"}


def test_drops_equal_up_to_rounding_tie_and_count_against_top_k():
  """A concept no set removes (the judge saturated near 1): drops differ by float rounding only,
  and top-K's rounding-sized lead must not rank it first (replicate 1's solid at K = 1 did)."""
  rows = run_rows({"a": ("shape", (3,))}, ks=(1,), effect=0.0, noise=0.0)
  top = next(r for r in rows if r["kind"] == "top")
  top["scores"] = [s - 5e-6 for s in top["scores"]]        # a rounding-sized "drop"
  for r in rows:
    if r["kind"] == "random" and r["blocks"] == top["blocks"]:
      r["scores"] = list(top["scores"])
  (cell,) = exact.concept_cells(rows)
  assert cell.rank() == 12 and cell.p() == 1.0
