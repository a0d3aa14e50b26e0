"""A cache of judged block interventions: one line per set, keyed by everything that decides it.

The exact verdict sweeps every K-block set (dit_jax/verdict/exact.py); what one set gives (the judge's
per-image presence, context and other-category accuracy) depends only on the model's weights, the
sampler, the prompts and seeds, what the selected blocks read instead (the withhold operator and
its text), the judge, and the set itself. Those inputs name the cache file
(<folder>/<key>.jsonl, with <key>.inputs.json beside it saying what they were), so a later run with
other K, another localizer, the reverse experiment or a placebo reuses every set already judged,
and a change of any input reads another file: a stale entry is never reused.

The key holds no version of this code: after a change that moves the sampler's or a model's
numbers (not only its speed), start a new folder (config.set_cache), as the stored results'
regeneration would.

Each set's line is appended and flushed as soon as it is judged, so a run stopped by Ctrl-C keeps
every finished set and the rerun starts from there; a line cut short by a kill is skipped. The
images of the sets a report shows (original, top-K, bottom-K, reverse) are kept beside the lines
as .npy files.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from dit_jax import files


def digest(value) -> str:
  """A short hash of a JSON-able value (arrays by their bytes)."""
  return hashlib.sha256(json.dumps(value, sort_keys=True, default=_bytes).encode()).hexdigest()[:24]


def _bytes(value) -> str:
  array = np.ascontiguousarray(value)
  return f"{array.dtype}{array.shape}:" + hashlib.sha256(array.tobytes()).hexdigest()


class SetCache:
  """Judged results per intervention set, for one combination of inputs (see the module)."""

  def __init__(self, folder: str, inputs: dict):
    self.folder, self.key = folder, digest(inputs)
    self.path = os.path.join(folder, f"{self.key}.jsonl")
    self.images = os.path.join(folder, self.key)
    description = os.path.join(folder, f"{self.key}.inputs.json")
    if not os.path.exists(description):
      files.write_json(description, json.loads(json.dumps(inputs, default=_bytes)))
    self.entries = self._read()

  def _read(self) -> dict[str, dict]:
    entries = {}
    if os.path.exists(self.path):
      with open(self.path) as f:
        for line in f:
          try:
            item = json.loads(line)
          except json.JSONDecodeError:   # the last line of a killed run
            continue
          entries[item["set"]] = item["value"]
    return entries

  def get(self, set_key: str) -> dict | None:
    return self.entries.get(set_key)

  def put(self, set_key: str, value: dict) -> None:
    os.makedirs(self.folder, exist_ok=True)
    with open(self.path, "a") as f:
      f.write(json.dumps({"set": set_key, "value": value}) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.entries[set_key] = value

  def image_path(self, set_key: str) -> str:
    return os.path.join(self.images, hashlib.sha256(set_key.encode()).hexdigest()[:24] + ".npy")

  def put_images(self, set_key: str, images: np.ndarray) -> None:
    files.write_npy(self.image_path(set_key), images)

  def has_images(self, set_key: str) -> bool:
    return os.path.exists(self.image_path(set_key))

  def images_of(self, set_key: str) -> np.ndarray | None:
    path = self.image_path(set_key)
    return np.load(path) if os.path.exists(path) else None
