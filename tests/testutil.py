"""Helpers shared by the parity tests."""
import numpy as np


def rel_error(actual, expected) -> float:
  """||actual - expected|| / ||expected|| over the whole array, in float64."""
  actual = np.asarray(actual, dtype=np.float64)
  expected = np.asarray(expected, dtype=np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def nchw_to_nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))
