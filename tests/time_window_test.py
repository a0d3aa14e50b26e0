"""Interventions limited to a window of sampling steps, and block x timestep maps."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dit_jax.localize import sweep as sweep_lib
from dit_jax.report import figures, tables
from dit_jax.models.interventions import ConceptProbe, TextAttentionSwap, TextSwap, during_steps
from dit_jax.localize.sweep import Intervention, TimeWindow
from dit_jax.pipeline.text2image import Text2Image
from dit_jax.localize.records import InterventionRow
from tests.localize_cli_test import run_localize
from tests.pipeline_test import flux_folder, pixart_folder  # noqa: F401  (fixtures)
from tests.testutil import nchw_to_nhwc, rel_error

PROMPTS = ["a dog in the snow", "a red car in the style of van gogh"]
NEUTRAL = ["a person in the snow", "a red car"]


def test_windows_are_thirds_of_the_schedule_or_step_ranges():
  assert sweep_lib.time_windows(("early", "middle", "late"), 20) == [
      TimeWindow("early", 0, 7), TimeWindow("middle", 7, 14), TimeWindow("late", 14, 20)]
  assert sweep_lib.time_windows(("late", "2:5"), 6) == [TimeWindow("late", 4, 6),
                                                           TimeWindow("2:5", 2, 5)]
  for bad, message in [("dawn", "'dawn': use"), ("5:3", "'5:3'"), ("0:21", "end <= 20")]:
    with pytest.raises(ValueError, match=message):
      sweep_lib.time_windows((bad,), 20)
  with pytest.raises(ValueError, match="twice"):
    sweep_lib.time_windows(("early", "early"), 20)
  with pytest.raises(ValueError, match="no late third"):
    sweep_lib.time_windows(("late",), 2)


def test_plan_windows_and_their_step_arrays():
  ranking = np.array([2, 0, 1, 3])
  early, late = TimeWindow("early", 0, 2), TimeWindow("late", 4, 6)
  plan = sweep_lib.plan_windows(ranking, [1, 2], [early, late], single_blocks=True)
  assert [i.name for i in plan[:3]] == ["top-1 @early", "top-2 @early", "all blocks @early"]
  assert plan[1].blocks == (0, 2) and plan[2].blocks == (0, 1, 2, 3)
  assert [i.blocks for i in plan if i.kind == "single" and i.window == late] == [(0,), (1,), (2,), (3,)]
  assert len(sweep_lib.plan_windows(ranking, [1], [early])) == 2     # no single blocks unasked
  # Without a window no intervention carries one; a plan with one gives every entry a range.
  assert sweep_lib.step_windows([Intervention("none", 0, ())]) is None
  steps = sweep_lib.step_windows([Intervention("none", 0, ()), plan[0]])
  assert steps.dtype == np.int32 and steps[0, 0] == 0 and steps[0, 1] >= 2 ** 31 - 1
  np.testing.assert_array_equal(steps[1], [0, 2])


def test_during_steps_limits_every_intervention_to_its_window():
  mask = jnp.array([True, False, True])
  cond = {"caption": jnp.ones((1, 2, 3)), "concept": ConceptProbe(jnp.ones((1, 2))),
          "text_swap": TextSwap(mask, jnp.zeros((1, 2, 3))),
          "other_swap": TextAttentionSwap(mask, jnp.zeros((2,), jnp.int32))}
  window = jnp.array([1, 3], jnp.int32)
  for step, active in [(0, False), (1, True), (2, True), (3, False)]:
    at = during_steps(cond, window, step)
    for key in ("text_swap", "other_swap"):
      np.testing.assert_array_equal(at[key].block_mask, np.asarray(mask) & active)
      assert type(at[key]) is type(cond[key])
    assert at["concept"] is cond["concept"] and at["caption"] is cond["caption"]
    np.testing.assert_array_equal(at["text_swap"].caption, cond["text_swap"].caption)


def test_swap_pooled_cannot_be_windowed():
  plan = [Intervention("top", 1, (0,), window=TimeWindow("early", 0, 2))]
  with pytest.raises(ValueError, match="swap_pooled with a time window"):
    sweep_lib.run_interventions(None, ["a"], ["b"], [0], (16, 16), plan, swap_pooled=True)


@pytest.fixture(scope="module")
def sweep_inputs(pixart_folder):  # noqa: F811
  folder, torch_pipe = pixart_folder
  pipe = Text2Image("pixart", str(folder), num_steps=6, guidance_scale=4.5, max_sequence_length=12)
  noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
  to_jax = lambda cond: jax.tree_util.tree_map(jnp.asarray, cond)
  shape = pipe.latent_shape(16, 16)
  sweep = jax.jit(sweep_lib.intervention_sweep("pixart", pipe.loop(shape)))
  run = lambda masks, reverse, windows=None: np.asarray(sweep(
      pipe.params, jnp.asarray(nchw_to_nhwc(noise.numpy())), to_jax(pipe.conditioning(PROMPTS, 16, 16)),
      to_jax(pipe.conditioning(NEUTRAL, 16, 16)), jnp.asarray(masks), jnp.asarray(reverse),
      None if windows is None else jnp.asarray(windows, jnp.int32)))
  return pipe, torch_pipe, noise, run


@pytest.mark.slow   # compiles the sweep with and without windows
def test_a_window_of_every_step_is_no_window_and_an_empty_one_is_the_original(sweep_inputs):
  _, _, _, run = sweep_inputs
  masks = np.array([[False, False, False], [False, True, True], [False, True, True]])
  reverse = np.array([False, False, True])
  plain = run(masks, reverse)
  np.testing.assert_array_equal(run(masks, reverse, [[0, 6]] * 3), plain)        # bit-identical
  np.testing.assert_array_equal(run(masks, reverse, [[0, 2 ** 31 - 1]] * 3), plain)
  empty = run(masks, reverse, [[0, 0], [3, 3], [0, 0]])
  np.testing.assert_array_equal(empty[1], plain[0])         # no step swaps: the original
  # Reversed and off at every step: the neutral prompt in every block (the "neutral" row).
  # (Same batch of 3: a vmap of another size may round differently.)
  neutral = run(np.zeros((3, 3), bool), reverse)
  np.testing.assert_array_equal(empty[2], neutral[2])


@pytest.mark.slow   # runs diffusers' pipeline and compiles the sweep
def test_first_third_matches_diffusers_with_a_hook_swapping_only_those_steps(sweep_inputs):
  """Reference: diffusers' PixArt pipeline whose selected blocks' cross-attention (attn2) reads the
  neutral prompt's projected caption and key mask, in the conditional half of the CFG batch, on
  the first third of the steps only (forward hooks; no dit_jax code)."""
  pipe, torch_pipe, noise, run = sweep_inputs
  blocks, (window,) = (1, 2), sweep_lib.time_windows(("early",), 6)
  assert (window.start, window.end) == (0, 2)
  transformer = torch_pipe.transformer
  with torch.no_grad():
    neutral, neutral_mask, _, _ = torch_pipe.encode_prompt(
        NEUTRAL, do_classifier_free_guidance=False, clean_caption=False, max_sequence_length=12)
    projected = transformer.caption_projection(neutral)
  bias = ((1 - neutral_mask.float()) * -10000.0).unsqueeze(1)
  step = [-1]

  def count(module, args, kwargs):       # the transformer runs once per step (CFG as one batch)
    step[0] += 1

  def swap(module, args, kwargs):
    if window.start <= step[0] < window.end:
      n = projected.shape[0]
      states, mask = kwargs["encoder_hidden_states"].clone(), kwargs["attention_mask"].clone()
      states[n:], mask[n:] = projected, bias    # rows [uncond; cond]: the conditional half
      kwargs = {**kwargs, "encoder_hidden_states": states, "attention_mask": mask}
    return args, kwargs

  hooks = [transformer.register_forward_pre_hook(count, with_kwargs=True)]
  hooks += [transformer.transformer_blocks[b].attn2.register_forward_pre_hook(swap, with_kwargs=True)
            for b in blocks]
  try:
    with torch.no_grad():
      expected = torch_pipe(PROMPTS, num_inference_steps=6, guidance_scale=4.5, height=16, width=16,
                            latents=noise.clone(), output_type="latent",
                            max_sequence_length=12, use_resolution_binning=False, clean_caption=False).images
  finally:
    for hook in hooks:
      hook.remove()
  assert step[0] == 5
  mask = np.isin(np.arange(3), blocks)
  ours = run(np.stack([mask, mask, np.zeros(3, bool)]), np.zeros(3, bool),
             [[window.start, window.end], [0, 6], [0, 6]])
  err = rel_error(ours[0], nchw_to_nhwc(expected.numpy()))
  print(f"first-third swap vs diffusers hooks: rel. error {err:.2e}")
  assert err < 1e-4, err
  # The window matters: the first third alone is neither the whole swap nor the original.
  print(f"vs every step {rel_error(ours[0], ours[1]):.2e}, vs the original {rel_error(ours[0], ours[2]):.2e}")
  assert rel_error(ours[0], ours[1]) > 1e-4 and rel_error(ours[0], ours[2]) > 1e-4


def windowed_rows():
  row = lambda kind, presence, blocks=(), k=0, window="all": InterventionRow(
      "circle", "shape", kind, k, 0, list(blocks), presence, {}, window=window).to_dict()
  rows = [row("none", 0.8), row("neutral", 0.1), row("top", 0.3, (0, 1), 2),
          row("top@early", 0.2, (0, 1), 2, "early"), row("all@early", 0.0, (0, 1, 2), 3, "early"),
          row("top@late", 0.8, (0, 1), 2, "late"), row("all@late", 0.7, (0, 1, 2), 3, "late")]
  rows += [row("single@early", p, (b,), 1, "early") for b, p in enumerate([0.5, 0.8, 0.9])]
  rows += [row("single@late", p, (b,), 1, "late") for b, p in enumerate([0.8, 0.8, 0.6])]
  rows += [row("single", p, (b,), 1) for b, p in enumerate([0.4, 0.8, 0.7])]
  return rows


def test_time_table_and_maps_by_hand(tmp_path):
  windows = [TimeWindow("early", 0, 2), TimeWindow("late", 4, 6)]
  rows = windowed_rows()
  table = tables.time_table(rows, windows)
  cells = [line.split() for line in table.splitlines()[4:]]
  lines = {(c[1] if c[0] == "shape" else c[0]): c for c in cells}
  assert lines["early"][-2:] == ["+0.600", "+0.800"]     # top-2 and every block, early steps only
  assert lines["late"][-2:] == ["+0.000", "+0.100"]
  assert lines["all"][-2:] == ["+0.500", "+0.700"]       # every step: top-2, and the neutral row
  entry = {"category": "shape", "per_step_with_wo": np.arange(18.0).reshape(6, 3).tolist()}
  figures.time_map("circle", entry, rows, windows, str(tmp_path / "circle"))
  saved = json.loads((tmp_path / "circle.json").read_text())
  causal = saved["causal"]
  assert [w["name"] for w in causal["windows"]] == ["early", "late"]
  np.testing.assert_allclose(causal["drop"], [[0.3, 0.0, -0.1], [0.0, 0.0, 0.2]], atol=1e-12)
  np.testing.assert_allclose(causal["all_steps"], [0.4, 0.0, 0.1], atol=1e-12)
  assert saved["per_step_with_wo"][5] == [15.0, 16.0, 17.0]
  assert (tmp_path / "circle.png").stat().st_size > 1000
  # Without windowed single-block rows there is no causal map, only attention.
  figures.time_map("circle", entry, rows[:3], [], str(tmp_path / "plain"))
  assert json.loads((tmp_path / "plain.json").read_text())["causal"] is None


def test_rows_written_before_windows_read_as_every_step():
  old = {"concept": "circle", "category": "shape", "kind": "top", "k": 2, "draw": 0, "blocks": [0, 1],
         "presence": 0.5, "other": {}, "random_overlap": True, "scores": [0.5], "hits": 1.0}
  assert InterventionRow.from_dict(old).window == "all"
  assert InterventionRow.from_dict({**old, "window": "early"}).to_dict()["window"] == "early"


def test_a_bad_withhold_or_window_stops_localize_before_any_scoring(tmp_path):
  with pytest.raises(ValueError, match="withhold='zero'"):
    run_localize(tmp_path, withhold="zero")
  with pytest.raises(ValueError, match="time window 'dawn'"):
    run_localize(tmp_path, time_windows=("dawn",))
  assert not (tmp_path / "scores").exists()


@pytest.mark.slow   # a short localization run
def test_localize_with_windows_and_the_mean_operator(tmp_path):
  rows = run_localize(tmp_path, num_steps=3, categories=("shape",), withhold="mean",
                      time_windows=("early", "late"), single_blocks=True, ks=(2,))
  kinds = {r["kind"] for r in rows}
  assert {"top@early", "all@late", "single@early", "single@late", "single"} <= kinds
  assert all((r["window"] == "all") == ("@" not in r["kind"]) for r in rows)
  saved = json.loads((tmp_path / "maps" / "circle.json").read_text())
  assert np.array(saved["causal"]["drop"]).shape == (2, 12)
  assert np.array(saved["per_step_with_wo"]).shape == (3, 12)
  summary = (tmp_path / "summary.txt").read_text()
  assert "time windows" in summary and re.search(r"early +0:1 ", summary)
  assert json.loads((tmp_path / "inputs.json").read_text())["interventions"]["sweep"]["withhold"] == "mean"


@pytest.mark.slow   # compiles a vmapped FLUX loop
@pytest.mark.parametrize("flux_folder", ["dev"], indirect=True)
def test_flux_windows_use_the_same_rule(flux_folder):  # noqa: F811
  """FLUX's two-trajectory run goes through the same loop: a window of every step is no window, an
  empty one the original, and one step alone neither."""
  folder, _ = flux_folder
  pipe = Text2Image("flux", str(folder), num_steps=2, max_sequence_length=12)
  swap = lambda window=None: Intervention("top", 1, (0,), window=window)
  plan = [Intervention("none", 0, ()), swap(), swap(TimeWindow("every", 0, 2)),
          swap(TimeWindow("never", 0, 0)), swap(TimeWindow("first", 0, 1))]
  images = sweep_lib.run_interventions(pipe, ["a dog in the snow"], ["a cat in the snow"], [0],
                                          (16, 16), plan, chunk=5).astype(int)
  np.testing.assert_array_equal(images[2], images[1])
  np.testing.assert_array_equal(images[3], images[0])
  assert not np.array_equal(images[4], images[1]) and not np.array_equal(images[4], images[0])
