"""studies/signflip.py: the exact interval of a mean difference over few clusters, and the
false-positive rate and power of an interval rule, by enumerating sign patterns."""
import numpy as np
import pytest
from scipy import stats

from studies import clustered, signflip
from studies import frontier_report as report


def scipy_p_greater(means, shift):
  """scipy's own exact sign-flip test (every pattern: 2^G <= n_resamples) of mean(means) > shift."""
  found = stats.permutation_test((np.asarray(means) - shift,), np.mean, permutation_type="samples",
                                 alternative="greater", n_resamples=10_000, vectorized=True)
  return found.pvalue


@pytest.mark.parametrize("means", [[0.3, -0.1, 0.25, 0.05, 0.5, 0.12],
                                   [0.02, 0.4, -0.3, 0.22, 0.1, 0.0, 0.7, -0.05, 0.3, 0.15]])
def test_the_interval_is_the_inverted_sign_flip_test(means):
  """Independent of the subset-means shortcut: scipy's permutation test rejects "mean <= d" at
  one-sided 0.025 just below the lower end and not just above it (and the mirror at the top)."""
  low, high = signflip.interval(means)
  eps = 1e-9
  assert scipy_p_greater(means, low - eps) <= 0.025 < scipy_p_greater(means, low + eps)
  flipped = [-m for m in means]
  assert scipy_p_greater(flipped, -high - eps) <= 0.025 < scipy_p_greater(flipped, -high + eps)
  if len(means) == 6:      # at 6 clusters the interval is their range: every one must agree
    assert [low, high] == [min(means), max(means)]


def test_no_interval_below_six_clusters_and_clear_error_past_the_limit():
  assert signflip.interval([0.1, 0.2, 0.3, 0.4, 0.5]) is None
  assert signflip.difference({"a": [0.1, 0.3], "b": [0.2]})["interval"] is None
  with pytest.raises(ValueError, match="21 clusters"):
    signflip.patterns(21)


def test_the_exact_interval_covers_where_a_bootstrap_over_six_clusters_does_not():
  """Six clusters of three values, a cluster effect from a symmetric heavy-tailed law and no true
  difference: the exact interval covers 0 at its stated 1 - 2/64 (within sampling error); the
  cluster bootstrap the fine-tuning rule used before falls short of its 95 %."""
  rng = np.random.default_rng(0)
  exact = boot = 0
  trials = 300
  for _ in range(trials):
    effect = rng.standard_t(2, 6)
    clusters = {str(c): list(effect[c] + 0.1 * rng.standard_normal(3)) for c in range(6)}
    low, high = signflip.difference(clusters)["interval"]
    exact += low <= 0 <= high
    low, high = clustered.summary(clusters, resamples=1000)["interval"]
    boot += low <= 0 <= high
  assert exact / trials >= 1 - 2 / 64 - 3 * np.sqrt(0.03 * 0.97 / trials)
  assert boot / trials < 0.93


def brute_rates(clusters, rule, deltas):
  """The same rates without the shift shortcut: every pattern, every delta, the rule run anew."""
  keys = list(clusters)
  centre = np.mean([np.mean(clusters[c]) for c in keys])
  said = {"null": [], **{d: [] for d in deltas}}
  for signs in signflip.patterns(len(keys)):
    for d in ("null", *deltas):
      shift = 0.0 if d == "null" else d
      found = rule({c: list(s * (np.asarray(clusters[c]) - centre) + shift) for s, c in zip(signs, keys)})
      said[d].append((found[0] > 0, found[1] < 0))
  return {"false_positive": float(np.mean([a or b for a, b in said["null"]])),
          "power": {str(d): float(np.mean([a for a, _ in said[d]])) for d in deltas}}


@pytest.mark.parametrize("rule", list(report.RULES))
def test_false_positives_and_power_match_running_the_rule_on_every_pattern(rule):
  rng = np.random.default_rng(1)
  clusters = {c: list(rng.normal(0.2 * i, 0.15, 3)) for i, c in enumerate("abcdef")}
  deltas = (0.1, 0.3, 0.6)
  def small(found):      # the bootstrap at fewer resamples, so the brute force stays quick
    return (report.RULES[rule](found) if rule != "cluster bootstrap"
            else clustered.summary(found, resamples=500)["interval"])
  found = signflip.rates(clusters, small, deltas)
  assert found["patterns"] == 64
  brute = brute_rates(clusters, small, deltas)
  assert found["false_positive"] == brute["false_positive"] and found["power"] == brute["power"]
  # delta_at_80: power is at least 0.8 just above it and below 0.8 just under it.
  above = signflip.rates(clusters, small, (found["delta_at_80"] + 1e-9, found["delta_at_80"] - 1e-9))
  assert list(above["power"].values())[0] >= 0.8 > list(above["power"].values())[1]
  if rule == "exact sign-flip":
    assert found["false_positive"] <= 2 / 64


def test_a_rule_that_always_says_higher_has_every_false_positive():
  found = signflip.rates({c: [0.0, 0.1] for c in "abcdef"}, lambda _: [0.1, 0.2])
  assert found["false_positive"] == 1.0 and set(found["power"].values()) == {1.0}
