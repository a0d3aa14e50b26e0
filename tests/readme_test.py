"""Issue 25, item 4: every figure README.md and the model card quote from a run is generated from
its stored JSON (benchmarks/readme.py), and the text cannot drift from it."""
import copy
import os

import pytest

from benchmarks import readme


@pytest.mark.parametrize("path", readme.DOCUMENTS, ids=os.path.basename)
def test_generated_regions_are_what_their_results_give(path):
  assert readme.stale(path) == [], ("regenerate with `python -m benchmarks.readme`", path)


def test_every_generator_has_its_region_in_a_document():
  text = "".join(open(path).read() for path in readme.DOCUMENTS)
  used = {m["name"] for m in readme.REGION.finditer(text)}
  assert used == set(readme.REGIONS)


def test_a_changed_result_makes_the_text_stale(monkeypatch):
  """What the test above guards against: a rerun whose numbers differ from the README's words."""
  original = readme.result

  def changed(name):
    found = copy.deepcopy(original(name))
    if name == "shapes_continue.json":
      found["final"]["heldout"]["mean"] = 0.5
    return found
  monkeypatch.setattr(readme, "result", changed)
  assert readme.stale(readme.DOCUMENTS[0]) == ["model-quality"]


def test_an_unknown_region_is_an_error(tmp_path):
  with pytest.raises(KeyError, match="no generator"):
    readme.render("<!-- generated:nothing -->\nold\n<!-- /generated:nothing -->")


def test_the_readme_is_a_guide_with_the_two_commands_on_its_first_screen():
  """Issue 40, item 6: README.md is a guide of about 250 lines (results live in docs/results.md),
  and its first screen holds the install-and-run command and the test command."""
  with open(readme.DOCUMENTS[0]) as f:
    lines = f.read().splitlines()
  assert len(lines) <= 260, len(lines)
  first_screen = "\n".join(lines[:30])
  assert "python localize.py --config configs/shapes.py" in first_screen
  assert "python -m pytest -q -n auto --dist loadfile" in first_screen
  # Every generated region but the shipped model's quality lives on the results page.
  text = "\n".join(lines)
  assert [m["name"] for m in readme.REGION.finditer(text)] == ["model-quality"]
