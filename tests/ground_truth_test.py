"""studies/ground_truth.py: a localizer's top-K against the best K-set of an exhaustive sweep."""
import itertools

import numpy as np

from dit_jax.verdict import exact
from studies import ground_truth


def cell(drop_of):
  """Four blocks, K = 2, every pair swept; drop_of(pair) the presence drop of a pair on 3 units."""
  base = np.ones(3)
  sets = [{"blocks": list(b), "scores": list(base - drop_of(b))} for b in itertools.combinations(range(4), 2)]
  return exact.ConceptAtK("red", "colour", 2, base, sets[0], sets, True, None)


def test_a_top_k_that_is_the_best_set_is_precise_and_ranks_first():
  c = cell(lambda b: 0.9 if b == (1, 2) else 0.1 * b[0])
  hit = ground_truth.judge_cell(c, ground_truth.top_k([0.0, 5.0, 4.0, 1.0], 2))
  assert hit["top"] == [1, 2] and hit["precision"] == 1.0 and hit["rank"] == 1
  miss = ground_truth.judge_cell(c, ground_truth.top_k([3.0, 5.0, 0.0, 1.0], 2))   # {0, 1}
  assert miss["precision"] == 0.5 and miss["rank"] == 4 and miss["percentile"] == 3 / 6   # 3 sets remove more


def test_tied_best_sets_all_count():
  c = cell(lambda b: 0.9 if b in ((1, 2), (0, 3)) else 0.0)
  assert ground_truth.judge_cell(c, (0, 3))["precision"] == 1.0
  assert ground_truth.judge_cell(c, (0, 3))["rank"] == 1


def test_the_summary_bootstraps_over_concepts():
  entries = [{"localizer": "a", "k": 2, "precision": p, "percentile": 0.1, "rank": 1} for p in (0.0, 1.0)]
  row, = ground_truth.summarize(entries, resamples=500)
  assert row["precision"] == 0.5 and row["precision_interval"][0] < 0.5 < row["precision_interval"][1]
  assert row["best_set_share"] == 1.0
