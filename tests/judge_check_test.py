"""Issue 25: the Shapes judge's accuracy on the model's own images (dit_jax.shapes.judge_check)."""
import json

import numpy as np
import pytest

from dit_jax import files
from dit_jax.diffusion.latents import to_uint8
from dit_jax.shapes import ASSETS, judge_check, render, world
from dit_jax.shapes.judge import ShapesJudge

SECTION = "## Judge accuracy on the model's own images"


def _card_table() -> str:
  """The first markdown table under SECTION in the model card."""
  text = (ASSETS / "MODEL_CARD.md").read_text()
  assert text.count(SECTION) == 1, f"MODEL_CARD.md needs exactly one {SECTION!r} section"
  body = text.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines()
  start = next(i for i, line in enumerate(body) if line.startswith("|"))
  end = next((i for i in range(start, len(body)) if not body[i].startswith("|")), len(body))
  return "\n".join(body[start:end])


def test_model_card_table_is_the_stored_result():
  """The card's table is markdown_table of results/shapes_judge_check.json, and that
  record is of the weights and judge shipped in assets/."""
  result = json.loads(judge_check.RESULT.read_text())
  assert _card_table() == judge_check.markdown_table(result)
  assert result["transformer_sha256"] == files.sha256(
      ASSETS / "transformer" / "diffusion_pytorch_model.safetensors")
  assert result["judge_sha256"] == files.sha256(ASSETS / "judge" / "params.safetensors")
  assert result["rows"][0]["t"] == 0 and [r["t"] for r in result["rows"][1:]] == [100, 300, 500]
  for row in result["rows"]:
    for category, (hits, n) in {c: (row["hits"][c], row["images"][c]) for c in row["accuracy"]}.items():
      assert row["accuracy"][category] == hits / n
      low, high = row["interval"][category]
      assert low <= hits / n <= high


def test_start_at_slices_the_schedule_at_t():
  from dit_jax.pipeline import text2image
  from dit_jax.diffusion import schedulers
  config = text2image.read_scheduler_config(str(ASSETS))
  schedule = schedulers.from_diffusers(config, judge_check.STEPS)
  tail = judge_check.start_at(schedule, 300)
  assert tail.timesteps[0] == 300 and tail.timesteps[-1] == schedule.timesteps[-1]
  assert len(tail.sigmas) == tail.num_steps + 1 == len(tail.alpha_t)
  np.testing.assert_allclose(tail.alpha_t[0] ** 2, schedulers.training_alphas_cumprod(config)[300],
                             rtol=1e-5)
  with pytest.raises(ValueError, match="not a timestep"):
    judge_check.start_at(schedule, 301)


def test_forward_noise_is_the_ddpm_forward_process():
  from dit_jax.diffusion import denoise
  x0 = render.render_batch(world.scenes(0, 3, "heldout"))
  eps = np.asarray(denoise.noise_for_seeds([4, 5, 6], x0.shape[1:]))
  x_t = np.asarray(judge_check.forward_noise(x0, 0.64, [4, 5, 6]))
  np.testing.assert_allclose(x_t, 0.8 * x0 + 0.6 * eps, atol=1e-5)
  np.testing.assert_allclose(np.asarray(judge_check.forward_noise(x0, 1.0, [4, 5, 6])), x0)


@pytest.mark.slow
def test_pipeline_runs_and_t0_is_the_judge_on_clean_renders():
  """A few images through noising and both denoisers; the t = 0 row is exactly the judge's reading
  of the clean renders (ShapesJudge.category_accuracy, evaluate.py's measure)."""
  num, seed = 6, 5
  # Two batches of one size: the results are concatenated over batches, with one compilation.
  result = judge_check.check(num=num, ts=(100,), seed=seed, batch=3)
  scenes = world.scenes(seed, num, "heldout")
  clean = to_uint8(render.render_batch(scenes))
  expected = ShapesJudge(ASSETS / "judge").category_accuracy(clean, [world.caption(s) for s in scenes])
  reference, noised = result["rows"]
  assert reference["t"] == 0 and reference["accuracy"] == expected
  assert noised["t"] == 100 and noised["model_evaluations"] == 2
  assert set(noised["accuracy"]) == set(expected) and 0 < noised["rmse"] < 0.5
  one_step = judge_check.check(num=2, ts=(100,), seed=seed, denoiser="one_step")
  assert one_step["rows"][1]["model_evaluations"] == 1 and 0 < one_step["rows"][1]["rmse"] < 0.5
  assert "| 0 (clean render) |" in judge_check.markdown_table(result)
