"""Issue 25, item 4: every figure README.md and the model card quote from a run is generated from
its stored JSON (benchmarks/build.py), and the text cannot drift from it."""
import copy
import os

import pytest

from docs import build


@pytest.mark.parametrize("path", build.DOCUMENTS, ids=os.path.basename)
def test_generated_regions_are_what_their_results_give(path):
  assert build.stale(path) == [], ("regenerate with `python -m docs.build`", path)


def test_every_generator_has_its_region_in_a_document():
  text = "".join(open(path).read() for path in build.DOCUMENTS)
  used = {m["name"] for m in build.REGION.finditer(text)}
  assert used == set(build.REGIONS)


def test_a_changed_result_makes_the_text_stale(monkeypatch):
  """What the test above guards against: a rerun whose numbers differ from the README's words."""
  original = build.result

  def changed(name):
    found = copy.deepcopy(original(name))
    if name == "shapes_continue.json":
      found["final"]["heldout"]["mean"] = 0.5
    return found
  monkeypatch.setattr(build, "result", changed)
  assert build.stale(build.DOCUMENTS[0]) == ["model-quality"]


def test_an_unknown_region_is_an_error(tmp_path):
  with pytest.raises(KeyError, match="no generator"):
    build.render("<!-- generated:nothing -->\nold\n<!-- /generated:nothing -->")
