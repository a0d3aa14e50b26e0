"""Localization on a mesh of 8 CPU devices gives one device's results (issue 27).

The intervention sweep (interventions split over the devices), the localizers' block-edit sweep
and the concept-scoring pass (its rows split) run on the shipped Shapes model once on one device
and once on the mesh. With the weights replicated, each device of the mesh runs as many rows as the
one-device run puts in a call (chunk per device; scoring batches of one row per device): the very
program the single device runs, on its own rows, so the results are compared exactly. With the
weights split over "fsdp" the sums of a split weight are added in another order: within a uint8
level. XLA_FLAGS must be set before jax starts, so the body runs in a subprocess, as
tests/sharding_test.py does.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.pixart_test import REPO

PROMPTS = ["a red circle in the sky", "a blue square on the grass"]
CONCEPTS = ["circle", "square"]
NEUTRAL = ["a red shape in the sky", "a blue shape on the grass"]
SEEDS = [0, 1]
SIZE = (32, 32)


@pytest.mark.slow
def test_eight_devices_match_one():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-m", "tests.sweep_sharding_test"], cwd=REPO, env=env,
                       capture_output=True, text=True)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert "OK" in run.stdout, run.stdout


def test_every_device_gets_as_many_rows_per_call():
  from dit_jax.localize.sweep import in_chunks
  sizes = []
  call = lambda index: (sizes.append(len(index)), np.asarray(index, np.float32)[:, None])[1]
  out = in_chunks(call, 10, 1, devices=8)          # 1 per device: two calls of 8, the last padded
  assert sizes == [8, 8] and [int(row[0]) for row in out] == list(range(10))
  sizes.clear()
  in_chunks(call, 10, 4)                           # one device: as before, evened out
  assert sizes == [4, 4, 4]


def plan(num_blocks: int):
  """Top-, bottom- and random-K, the reverse, and windowed interventions (a step window each)."""
  from dit_jax.localize import sweep as sweep_lib
  ranking = np.arange(num_blocks)
  windows = sweep_lib.time_windows(["0:1"], 2)
  return (sweep_lib.plan_interventions(ranking, [2], random_draws=2, reverse_draws=1)
          + sweep_lib.plan_windows(ranking, [2], windows))


def results(pipe, chunk: int, batch_size: int, parts=("sweep", "block_edits", "scores")) -> dict:
  from dit_jax.localize import sweep as sweep_lib
  from dit_jax.localize.localizers import common
  bypass = common.single_block_masks(pipe.module.config.num_blocks)[:5]
  run = {
      "sweep": lambda: sweep_lib.run_interventions(
          pipe, PROMPTS, NEUTRAL, SEEDS, SIZE, plan(pipe.module.config.num_blocks), chunk),
      "block_edits": lambda: common.run_block_edits(pipe, PROMPTS[:1], SEEDS, SIZE, bypass,
                                                    np.zeros_like(bypass), chunk),
      "scores": lambda: sweep_lib.concept_scores(pipe, PROMPTS, CONCEPTS, SEEDS, SIZE, batch_size)}
  return {part: run[part]() for part in parts}


def sweep_rows(pipe) -> tuple[int, int, set[int]]:
  """Of the sweep's last call: its interventions, the devices its block masks are on, and the
  intervention counts in its compiled program's latents (I, N, H, W, C), per device."""
  sweep = pipe.program(("sweep", pipe.latent_shape(*SIZE), ()), None)
  masks = sweep.last_args[4]
  compiled = sweep.lower(*sweep.last_args).compile().as_text()
  return (masks.shape[0], len(masks.sharding.device_set),
          {int(n) for n in re.findall(r"f32\[(\d+),4,32,32,3\]", compiled)})


def record_arguments(pipe):
  """Keep the last arguments of every program the pipeline runs (to compile the sweep again)."""
  build = pipe.program

  def program(key, make):
    jitted = build(key, make)
    if hasattr(jitted, "last_args"):
      return jitted

    def call(*args):
      call.last_args = args
      return jitted(*args)
    call.lower, call.last_args = jitted.lower, None
    pipe._programs[key] = call
    return call
  pipe.program = program


def main():
  import jax
  from dit_jax import sharding
  from dit_jax.pipeline.text2image import Text2Image
  from dit_jax.shapes import ASSETS
  assert jax.device_count() == 8, jax.devices()
  load = lambda: Text2Image("pixart", str(ASSETS), num_steps=2, guidance_scale=4.5,
                            max_sequence_length=32)
  one = results(load(), chunk=1, batch_size=1)

  pipe = load()
  pipe.use_mesh(sharding.local_mesh())         # weights replicated: exactly one device's results
  record_arguments(pipe)
  mesh = results(pipe, chunk=1, batch_size=8)
  for name, expected in one.items():
    assert mesh[name].shape == expected.shape, (name, mesh[name].shape, expected.shape)
    np.testing.assert_array_equal(mesh[name], expected, err_msg=name)
  # 8 interventions a call, split, not computed on every device and sliced: one per device.
  assert sweep_rows(pipe) == (8, 8, {1}), sweep_rows(pipe)
  print("weights replicated: sweep, block edits and scores equal one device's")

  pipe = load()
  pipe.use_mesh(sharding.local_mesh(fsdp=2))   # weights split over pairs of devices
  specs = {str(x.sharding.spec) for x in jax.tree_util.tree_leaves(pipe.params)}
  assert any("fsdp" in spec for spec in specs), specs
  sweep = results(pipe, chunk=1, batch_size=8, parts=("sweep",))["sweep"]
  # A weight split along a contracting dimension is summed in two halves and an all-reduce: float32
  # roundoff, which moves a few pixels across a uint8 rounding boundary.
  difference = np.abs(sweep.astype(int) - one["sweep"].astype(int))
  assert difference.max() <= 1 and difference.mean() < 1e-3, (difference.max(), difference.mean())
  print(f"fsdp=2: sweep within one uint8 level of one device's ({np.count_nonzero(difference)} "
        f"of {difference.size} values differ)")
  print("OK")


if __name__ == "__main__":
  main()
