"""The rule-based Shapes judge (dit_jax/shapes/pixel_judge.py), the two-judge hook
(dit_jax/shapes/confirm.py) and the stored agreement study (studies/second_judge.py)."""
import os

import numpy as np
import pytest

from dit_jax.localize import judges
from dit_jax.knowledge import PromptPair
from dit_jax.diffusion.latents import to_uint8
from dit_jax.shapes import confirm as confirm_lib
from dit_jax.shapes import pixel_judge, render, world
from dit_jax.shapes.classifier import HeadPrediction

RESULT = os.path.join(os.path.dirname(__file__), "..", "results", "second_judge.json")
NUM_SCENES = 320   # every concept of the covered categories ~50 times or more


@pytest.fixture(scope="module")
def rendered():
  """Renders of every scene kind (plain, named, generic; held-out combinations too)."""
  scenes = world.scenes(31, NUM_SCENES, "any")
  return scenes, render.render_batch(scenes)


@pytest.mark.parametrize("category", pixel_judge.CATEGORIES)
def test_reads_each_concept_of_rendered_scenes(rendered, category):
  scenes, images = rendered
  read = pixel_judge.PixelJudge()(images)[category].names
  truth = [getattr(s, category) for s in scenes]
  for concept in world.CONCEPTS[category]:
    rows = [i for i, t in enumerate(truth) if t == concept]
    hits = sum(read[i] == concept for i in rows)
    assert len(rows) >= 30, (concept, len(rows))
    misread = sorted({read[i] for i in rows if read[i] != concept})
    assert hits / len(rows) >= 0.98, f"{category}={concept!r}: {hits}/{len(rows)}, read as {misread}"


def test_uint8_and_float_inputs_read_alike(rendered):
  _, images = rendered
  judge = pixel_judge.PixelJudge()
  a, b = judge(images[:32]), judge.predictions(to_uint8(images[:32]))
  for c in pixel_judge.CATEGORIES:
    assert np.mean(a[c].labels == b[c].labels) >= 0.97
  with pytest.raises(ValueError, match="32, 32, 3"):
    judge(np.zeros((2, 16, 16, 3), np.float32))


def test_constants_are_the_renderers():
  """The place colours are render.background's at the ring's median depth; a change to the
  renderer's grounds shows here before it shows as misreads."""
  n = render.SIZE * render.SUPERSAMPLE
  px, py = np.meshgrid((np.arange(n) + 0.5) / render.SUPERSAMPLE, (np.arange(n) + 0.5) / render.SUPERSAMPLE)
  for i, place in enumerate(world.PLACES):
    ground = render.background(place, px, py, np.random.default_rng(i))
    ground = ground.reshape(render.SIZE, render.SUPERSAMPLE, render.SIZE, render.SUPERSAMPLE, 3)
    median = pixel_judge.ring_median(ground.mean(axis=(1, 3))[None])
    np.testing.assert_allclose(median[0], pixel_judge.PLACE_RGB[i], atol=0.06, err_msg=place)
    assert pixel_judge.read_place(median)[0] == i
  np.testing.assert_array_equal(pixel_judge.CENTRES[world.POSITIONS.index("on the left")],
                                render.CENTRES["on the left"])


def test_is_a_registered_judge(rendered):
  scenes, images = rendered
  judge = judges.make_judge("shapes_pixels")
  pairs = [PromptPair(world.caption(s), world.neutral_caption(s, "place"), s.place, "place")
           for s in scenes[:8]]
  assert judge.present(to_uint8(images[:8]), pairs).all()
  assert judge.chance("position") == 1 / 5 and judge.chance("shape") is None
  wrong = [PromptPair("a red star in the sky", "a red shape in the sky", "star", "shape")]
  with pytest.raises(ValueError, match="reads only"):
    judge.presence(to_uint8(images[:1]), wrong)


# ------------------------------------------------------------------ the confirmation hook
class FixedJudge:
  """A judge that reads what it is told: {category: names per image}."""

  categories = pixel_judge.CATEGORIES

  def __init__(self, names):
    self.names = names

  def predictions(self, images):
    del images
    return {c: HeadPrediction(np.array([world.CONCEPTS[c].index(k) for k in v]), None,
                              world.CONCEPTS[c]) for c, v in self.names.items()}


def test_confirm_counts_and_flags_disagreements():
  images = np.zeros((4, 32, 32, 3), np.uint8)
  asks = [{"colour": "red", "place": "the sky"}, {"colour": "red"}, {"colour": "blue"}, {}]
  first = FixedJudge({"colour": ["red", "red", "blue", "red"],
                      "position": ["on the left"] * 4, "place": ["the sky"] * 4})
  second = FixedJudge({"colour": ["red", "green", "blue", "red"],
                       "position": ["on the left"] * 4, "place": ["the snow"] * 4})
  check = confirm_lib.confirm(images, asks, first, second)
  summary = check.summary()
  assert set(summary) == {"colour", "place"}            # nothing asked for a position
  assert summary["colour"] == {"images": 3, "first_present": 3, "second_present": 2,
                               "confirmed": 2, "disagree": 1, "disagreeing_images": [1]}
  assert summary["place"]["disagreeing_images"] == [0]
  assert "the judges disagree on 1 images: [1]" in check.message()
  with pytest.raises(ValueError, match="4 images but 3 asks"):
    confirm_lib.confirm(images, asks[:3], first, second)


def test_confirm_on_renders_with_the_pixel_judge(rendered):
  scenes, images = rendered
  prompts = [world.caption(s) for s in scenes[:16]]
  truth = {c: [getattr(s, c) for s in scenes[:16]]
           for c in pixel_judge.CATEGORIES}
  check = confirm_lib.confirm(to_uint8(images[:16]), confirm_lib.asks_from_prompts(prompts),
                              FixedJudge(truth), pixel_judge.PixelJudge())
  for c, s in check.summary().items():
    assert s["disagree"] == 0 and s["confirmed"] == s["images"] > 0, (c, s)


def test_cohen_kappa():
  assert confirm_lib.cohen_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)   # po .7, pe .5
  assert confirm_lib.cohen_kappa(np.diag([3, 4, 5])) == pytest.approx(1.0)
  assert confirm_lib.cohen_kappa([[10, 10], [10, 10]]) == pytest.approx(0.0)
  assert confirm_lib.cohen_kappa([[7, 0], [0, 0]]) is None                   # one class only
  row = confirm_lib.agreement([0, 1, 2, 2], [0, 1, 2, 1], ("a", "b", "c"))
  assert (row["n"], row["agree"], row["rate"]) == (4, 3, 0.75)
  assert row["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


# ------------------------------------------------------------------ the stored study
def test_stored_agreement_schema():
  from dit_jax.files import read_json
  result = read_json(RESULT)
  assert result["command"].startswith("python -m studies.second_judge")
  assert set(result["agreement"]) == set(pixel_judge.CATEGORIES)
  pooled_images = sum(s["images"] for s in result["sets"].values())
  assert "captioned" in result["sets"] and len(result["sets"]) == 1 + len(pixel_judge.CATEGORIES)
  rows = [result["agreement"]] + [s["categories"] for s in result["sets"].values()]
  for table in rows:
    for category, row in table.items():
      k = len(world.CONCEPTS[category])
      confusion = np.asarray(row["confusion"])
      assert row["classes"] == list(world.CONCEPTS[category])
      assert confusion.shape == (k, k) and confusion.sum() == row["n"]
      assert np.trace(confusion) == row["agree"] and row["rate"] == row["agree"] / row["n"]
      low, high = row["interval"]
      assert low <= row["rate"] <= high
      assert row["kappa"] is None or -1 <= row["kappa"] <= 1
  assert all(r["n"] == pooled_images for r in result["agreement"].values())
  for category, by_judge in result["renders"]["categories"].items():
    assert by_judge["pixel"]["n"] >= 256 and by_judge["pixel"]["accuracy"] >= 0.99, category
  assert set(result["sets"]["captioned"]["presence"]) == set(pixel_judge.CATEGORIES)
  for name, part in result["sets"].items():
    for category, counts in part["presence"].items():
      both, n = counts["confirmed"], counts["images"]
      assert both <= min(counts["first_present"], counts["second_present"])
      assert counts["disagree"] == counts["first_present"] + counts["second_present"] - 2 * both
      assert counts["agreement"]["n"] == n and counts["agreement"]["agree"] == n - counts["disagree"]


def test_the_shapes_judge_gives_the_pixel_judges_word_on_a_run_s_images(rendered):
  """The localize job's hook (Judge.second_opinion): per image, each judge's reading of the pair's
  concept; the truth a rendered scene shows is what both should read, a wrong ask neither."""
  from dit_jax.shapes.judge import ShapesJudge
  scenes, images = rendered
  red = [i for i, s in enumerate(scenes) if s.colour == "red"][:4]
  blue = [i for i, s in enumerate(scenes) if s.colour == "blue"][:2]
  pairs = [PromptPair(world.caption(scenes[i]), "", "red", "colour") for i in red + blue]
  opinion = ShapesJudge().second_opinion(to_uint8(images[red + blue]), pairs)
  assert opinion["judge"] == "pixel judge"
  assert opinion["second"] == [True] * 4 + [False] * 2
  assert opinion["first"][4:] == [False, False]
  shape = [PromptPair(world.caption(scenes[i]), "", "circle", "shape") for i in red]
  assert ShapesJudge().second_opinion(to_uint8(images[red]), shape) is None   # no pixel reading of shape


def test_a_run_reports_the_second_judge_and_where_the_judges_disagree(tmp_path):
  """conclude.second_opinions: the console's counts and second_judge.json's disagreeing images, from
  rows built by hand (a run whose judge has no second judge prints nothing)."""
  from dit_jax.files import read_json
  from dit_jax.localize import conclude
  opinion = lambda name, first, second: {"judge": "pixel judge", "first": first, "second": second,
                                         "intervention": name}
  rows = [{"concept": "red", "category": "colour", "kind": "none", "k": 0,
           "second_opinion": opinion("original", [True, True, True, False], [True, True, True, True])},
          {"concept": "red", "category": "colour", "kind": "top", "k": 2,
           "second_opinion": opinion("top-2", [False] * 4, [False, True, False, False])},
          {"concept": "red", "category": "colour", "kind": "random", "k": 2}]
  lines = conclude.second_opinions(rows, str(tmp_path))
  assert "red (colour): original 3 vs 4 of 4, top-2 0 vs 1 of 4" in lines
  assert "the judges disagree on 2 of 8 images" in lines
  stored = read_json(tmp_path / "second_judge.json")["rows"]
  assert [r["disagreeing_images"] for r in stored] == [[3], [1]]
  assert conclude.second_opinions(rows[2:], str(tmp_path)) == ""
