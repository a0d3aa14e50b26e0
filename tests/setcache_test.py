"""The judged-set cache (dit_jax/localize/setcache.py): keyed by every input that decides a set's images,
resumed set by set after a Ctrl-C, reused by another K grid, never reused across other inputs."""
import json

import numpy as np
import pytest

from configs import shapes as shapes_config
from dit_jax.localize import setcache, stages, sweep
from dit_jax.localize import job as localize
from tests.testutil import set_keys


def test_entries_are_keyed_by_their_inputs_and_a_torn_line_is_skipped(tmp_path):
  inputs = {"weights": "abc", "prompts": ["a red circle"], "judge": {"name": "shapes"}}
  cache = setcache.SetCache(str(tmp_path), inputs)
  cache.put("[[0], false, null]", {"scores": [0.5]})
  cache.put_images("[[0], false, null]", np.zeros((1, 2, 2, 3), np.uint8))
  with open(cache.path, "a") as f:
    f.write('{"set": "[[1], false, null]", "value": {"sco')        # a kill mid-line
  again = setcache.SetCache(str(tmp_path), inputs)
  assert again.get("[[0], false, null]") == {"scores": [0.5]} and again.get("[[1], false, null]") is None
  assert again.images_of("[[0], false, null]").shape == (1, 2, 2, 3)
  other = setcache.SetCache(str(tmp_path), {**inputs, "prompts": ["a blue circle"]})
  assert other.path != cache.path and other.get("[[0], false, null]") is None
  assert json.loads((tmp_path / f"{cache.key}.inputs.json").read_text()) == inputs


def tiny(out_dir, **overrides):
  config = shapes_config.get_config()
  set_keys(config, **{**dict(num_steps=2, prompts_per_concept=1, categories=("position",), ks=(1,),
                             out_dir=str(out_dir)), **overrides})
  return config


@pytest.mark.slow
def test_a_stopped_sweep_resumes_set_by_set_and_another_k_reuses_the_sets(tmp_path, monkeypatch):
  sampled = []
  real = sweep.run_interventions

  def counting(pipe, prompts, neutral, seeds, size, plan, *args, **kwargs):
    if len(sampled) == 1 and stop:
      raise KeyboardInterrupt                   # Ctrl-C after the first batch of sets
    sampled.append(len(plan))
    return real(pipe, prompts, neutral, seeds, size, plan, *args, **kwargs)
  monkeypatch.setattr(sweep, "run_interventions", counting)
  monkeypatch.setattr(stages, "SETS_PER_BATCH", 4)
  stop = True
  with pytest.raises(SystemExit):
    localize.run(tiny(tmp_path), tmp_path)
  assert sampled == [4]
  stop = False
  localize.run(tiny(tmp_path), tmp_path)
  # 12 one-block sets, the original, the neutral prompt and top-K's reverse: 15, 4 of them cached.
  assert sum(sampled) == 15
  sampled.clear()
  localize.run(tiny(tmp_path, ks=(1, 2), fresh=True), tmp_path)
  assert sum(sampled) == 66 + 1            # K = 2's sets and its reverse; K = 1's from the cache
  sampled.clear()
  localize.run(tiny(tmp_path, ks=(1,), seeds=(1,), fresh=True), tmp_path)
  assert sum(sampled) == 15                # another seed: other images, nothing reused
