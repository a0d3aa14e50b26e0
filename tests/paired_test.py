"""studies/paired.py: the words a benchmark may say about a paired difference."""
import pytest

from studies import paired


def test_words_follow_the_interval_and_wait_for_enough_pairs():
  higher = paired.difference([0.9, 0.8, 0.85, 0.95, 0.9, 0.8], [0.1, 0.2, 0.15, 0.1, 0.2, 0.3])
  assert higher["pairs"] == 6 and higher["mean"] == pytest.approx(4.15 / 6)
  assert paired.verdict(higher) == "higher"
  lower = paired.difference(*reversed([[0.9, 0.8, 0.85, 0.95, 0.9, 0.8], [0.1, 0.2, 0.15, 0.1, 0.2, 0.3]]))
  assert paired.verdict(lower) == "lower"
  mixed = paired.difference([0.1, 0.9, 0.2, 0.8, 0.5, 0.4], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
  assert paired.verdict(mixed) == "no difference shown"
  assert paired.verdict({**higher, "pairs": 5}) == "too few pairs to say (< 6)"
  assert paired.verdict(paired.difference([1.0], [0.0])) == "no interval"
  assert paired.cell(higher).startswith("0.69 [")
  assert paired.cell({**higher, "pairs": 2}) == "0.69 (n = 2)"


def test_unpaired_lengths_are_an_error():
  with pytest.raises(ValueError, match="equal lengths, got 2 and 3"):
    paired.difference([1, 2], [1, 2, 3])


def test_six_pairs_say_higher_only_where_all_six_do():
  """The exact interval (studies/signflip.py) at six pairs is their range; the bootstrap interval
  used before excluded 0 for five gains and one small loss."""
  found = paired.difference([0.3] * 5 + [-0.01], [0.0] * 6)
  assert found["interval"] == pytest.approx([-0.01, 0.3])
  assert paired.verdict(found) == "no difference shown"
  assert paired.verdict(paired.difference([0.3] * 5 + [0.01], [0.0] * 6)) == "higher"
