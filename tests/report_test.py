"""Reports of a localization run on synthetic data: files parse back, plots open, the verdict is right."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from dit_jax.verdict import summary
from dit_jax.report import tables, figures

NUM_BLOCKS = 12


def make_scores():
  rng = np.random.default_rng(0)
  scores = {}
  for concept, category in [("van gogh", "style"), ("monet", "style"), ("a dog", "animal")]:
    wo = rng.uniform(0, 1, NUM_BLOCKS)
    scores[concept] = {"category": category, "with_wo": (wo * 10).tolist(), "without_wo": wo.tolist(),
                       "num_prompts": 4, "num_seeds": 2, "num_steps": 5}
  return scores


# Per-image scores around each row's presence, the same spread in every row: the (prompt, seed)
# units then differ between interventions by exactly the presences' difference.
SPREAD = np.array([-0.03, -0.02, -0.01, 0.01, 0.02, 0.03])


def row(concept, category, kind, k, presence, other=None, draw=0):
  return {"concept": concept, "category": category, "kind": kind, "k": k, "draw": draw,
          "blocks": list(range(k)), "presence": presence, "other": other or {},
          "scores": (presence + SPREAD).tolist()}


def style_concept(name, original, top, random, bottom, reverse, animal):
  """One style concept's rows: presence at K=0, top-2/-4 (pair), random-2 draws and random-4
  (triple), bottom-2, reverse-2; the animal category's accuracy at K=0, top-2, top-4 (triple)."""
  return [row(name, "style", "none", 0, original, {"animal": animal[0]}),
          row(name, "style", "top", 2, top[0], {"animal": animal[1]}),
          row(name, "style", "top", 4, top[1], {"animal": animal[2]}),
          row(name, "style", "random", 2, random[0], draw=0),
          row(name, "style", "random", 2, random[1], draw=1),
          row(name, "style", "random", 4, random[2], draw=0),
          row(name, "style", "bottom", 2, bottom),
          row(name, "style", "reverse", 2, reverse),
          row(name, "style", "single", 1, original - 0.02)]


def make_rows():
  """Hand-picked presences (numbers chosen away from the 2x / half thresholds)."""
  return (style_concept("van gogh", 0.9, (0.3, 0.1), (0.8, 0.7, 0.5), 0.85, 0.6, (0.8, 0.7, 0.8))
          + style_concept("monet", 0.7, (0.3, 0.1), (0.7, 0.6, 0.5), 0.7, 0.4, (0.6, 0.6, 0.5))
          # a dog: top-K removes the dog (0.8 -> 0.4) but also hurts style (0.9 -> 0.6): not specific.
          + [row("a dog", "animal", "none", 0, 0.8, {"style": 0.9}),
             row("a dog", "animal", "top", 2, 0.4, {"style": 0.6}),
             row("a dog", "animal", "random", 2, 0.7, {"style": 0.9}, draw=0)])


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def open_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG"
    return image.size


def test_scores_round_trip(tmp_path):
  scores = make_scores()
  figures.write_scores(scores, str(tmp_path / "out"))
  with open(tmp_path / "out" / "scores.json") as f:
    assert json.load(f) == scores
  table = read_csv(tmp_path / "out" / "scores.csv")
  assert len(table) == len(scores) * NUM_BLOCKS
  for line in table:
    entry = scores[line["concept"]]
    block = int(line["block"])
    assert line["category"] == entry["category"]
    assert float(line["with_wo"]) == entry["with_wo"][block]   # repr round-trips floats exactly
    assert float(line["without_wo"]) == entry["without_wo"][block]
  dog = [line for line in table if line["concept"] == "a dog"]
  best = int(np.argmax(scores["a dog"]["with_wo"]))
  assert sorted(int(line["rank_with_wo"]) for line in dog) == list(range(1, NUM_BLOCKS + 1))
  assert int(dog[best]["rank_with_wo"]) == 1
  assert not [p for p in os.listdir(tmp_path / "out") if ".tmp" in p]   # nothing half-written left


def test_block_ranks_ties_keep_block_order():
  np.testing.assert_array_equal(summary.block_ranks([0.5, 2.0, 0.5, 1.0]), [3, 1, 4, 2])


def test_rows_round_trip(tmp_path):
  rows = make_rows()
  figures.write_rows(rows, str(tmp_path))
  with open(tmp_path / "interventions.jsonl") as f:
    assert [json.loads(line) for line in f] == rows
  table = read_csv(tmp_path / "interventions.csv")
  assert len(table) == len(rows)
  for line, r in zip(table, rows):
    assert (line["concept"], line["kind"], int(line["k"]), int(line["draw"])) == (
        r["concept"], r["kind"], r["k"], r["draw"])
    assert [int(b) for b in line["blocks"].split()] == r["blocks"]
    assert float(line["presence"]) == r["presence"]
    for category in ("animal", "style"):
      expected = r["other"].get(category)
      assert line[f"other_{category}"] == ("" if expected is None else repr(expected))


def test_summary_numbers_by_hand(tmp_path):
  entries = tables.write_summary(make_rows(), str(tmp_path))
  by_key = {(e["category"], e["k"]): e for e in entries}
  assert sorted(by_key) == [("animal", 2), ("style", 2), ("style", 4)]
  style = by_key["style", 2]
  assert style["concepts"] == 2 and style["random_draws"] == 2
  assert style["original"] == pytest.approx(0.8)
  assert style["top_drop"] == pytest.approx(0.5)                   # (0.6 + 0.4) / 2
  assert style["random_drop"] == pytest.approx(0.1)                # (0.1 + 0.2 + 0.0 + 0.1) / 4
  assert style["bottom_drop"] == pytest.approx(0.025)              # (0.05 + 0.0) / 2
  assert style["reverse_presence"] == pytest.approx(0.5)
  assert style["other_drop"] == pytest.approx(0.05)                # (0.1 + 0.0) / 2
  assert style["top_over_random"] == pytest.approx(5.0)
  # No neutral-prompt rows: no presence floor to test, so no verdict (dit_jax/verdict/sets.py).
  assert style["localized"] is None and style["tests"]["removal"] is None
  assert by_key["style", 4]["top_drop"] == pytest.approx(0.7)
  assert by_key["style", 4]["bottom_drop"] is None
  dog = by_key["animal", 2]
  assert dog["top_drop"] == pytest.approx(0.4) and dog["other_drop"] == pytest.approx(0.3)
  with open(tmp_path / "summary.json") as f:
    assert json.load(f) == entries
  text = (tmp_path / "summary.txt").read_text()
  assert text.strip() == tables.summary_table(make_rows()).strip()
  lines = text.splitlines()
  starts = [lines.index(title) for title, _, _ in tables.SUMMARY_TABLES] + [len(lines)]
  verdicts, drops, tests, controls = [{line.split()[0] + line.split()[1]: line
                                       for line in lines[a + 3:b]
                                       if line.split()[:1] in (["style"], ["animal"])}
                                      for a, b in zip(starts, starts[1:])]
  assert sorted(drops) == sorted(tests) == sorted(controls) == ["animal2", "style2", "style4"]
  assert sorted(verdicts) == sorted(drops) and verdicts["style2"].split()[-1] == "-"
  assert "+0.50 [" in drops["style2"] and "5.0x" in controls["style2"]
  low, high = style["top_drop_interval"]     # 6 units drop 0.6 (van gogh), 6 drop 0.4 (monet)
  assert 0.4 < low < 0.5 < high < 0.6 and style["units"] == 12


def test_top_over_random_is_information_only():
  rows = [row("x", "c", "none", 0, 0.9), row("x", "c", "top", 3, 0.5),
          row("x", "c", "random", 3, 0.35, draw=0), row("x", "c", "random", 3, 0.55, draw=1)]
  (entry,) = summary.summarize(rows)
  assert entry["top_drop"] == pytest.approx(0.4) and entry["random_drop"] == pytest.approx(0.45)
  set_presence(rows[2], 0.75)                            # random drop now (0.15 + 0.35) / 2 = 0.25
  entry = summary.summarize(rows)[0]
  assert entry["top_over_random"] == pytest.approx(1.6)
  # Random-K that does not lower presence at all: the ratio is undefined, the table says inf.
  set_presence(rows[2], 0.95)
  set_presence(rows[3], 0.95)
  assert summary.summarize(rows)[0]["top_over_random"] is None
  assert " inf " in tables.summary_table(rows)
  assert summary.summarize(rows[:2])[0]["localized"] is None              # no random-K: no verdict


def set_presence(r, presence):
  r.update(presence=presence, scores=(presence + SPREAD).tolist())


def test_summary_by_concept():
  entries = summary.summarize(make_rows(), by="concept")
  monet = {e["k"]: e for e in entries if e["concept"] == "monet"}
  assert monet[2]["top_drop"] == pytest.approx(0.4) and monet[2]["random_drop"] == pytest.approx(0.05)


def test_auto_k():
  rows = make_rows()
  assert summary.auto_k(rows, "style", 0.35) == 2       # mean top-2 presence 0.3
  assert summary.auto_k(rows, "style", 0.2) == 4        # 0.3 at K=2 is not below, 0.1 at K=4 is
  assert summary.auto_k(rows, "style", 0.05) is None
  assert summary.auto_k(rows, "a dog", 0.5) == 2        # a concept, not a category
  assert summary.auto_k(rows, "a dog", 0.95) == 2       # K=0 (no intervention) never counts
  with pytest.raises(KeyError):
    summary.auto_k(rows, "nothing", 0.5)


def test_heatmap_png(tmp_path):
  scores = make_scores()
  path = tmp_path / "plots" / "heatmap.png"
  labels = [f"D{i}" for i in range(4)] + [f"S{i}" for i in range(NUM_BLOCKS - 4)]
  figures.heatmap(scores, str(path), variant="without_wo", block_labels=labels, k=3)
  width, height = open_png(path)
  assert 400 < width < 3000 and 200 < height < 2000 and width > height
  with pytest.raises(ValueError):
    figures.heatmap(scores, str(path), variant="nope")


def test_k_curve_png(tmp_path):
  for name in ("style", "van gogh"):
    path = tmp_path / f"{name}.png"
    figures.k_curve(make_rows(), name, str(path))
    width, height = open_png(path)
    assert 400 < width < 2000 and 300 < height < 1500


def test_image_grid_png(tmp_path):
  rng = np.random.default_rng(1)
  names = ["original", "top-2", "random-2 #0", "random-2 #1", "bottom-2", "reverse-2"]
  images = {n: rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8) for n in names}
  path = tmp_path / "grid.png"
  figures.image_grid(images, str(path), column_labels=["a dog in the snow", "a dog", "a very long prompt"])
  width, height = open_png(path)
  assert width > 3 * 128 and height > 6 * 128
  # Without labels the grid is exactly the tiles (4x nearest) and the gaps; pixels are repeated.
  figures.image_grid(images, str(path), labels=False)
  with Image.open(path) as image:
    grid = np.asarray(image.convert("RGB"))
  assert grid.shape == (6 * 132 + 4, 3 * 132 + 4, 3)
  np.testing.assert_array_equal(grid[4:8, 4:8], np.broadcast_to(images["original"][0, 0, 0], (4, 4, 3)))
  with pytest.raises(ValueError):
    figures.image_grid({"a": np.zeros((2, 8, 8, 3), np.float32)}, str(path))


def test_no_verdict_without_knowledge_and_no_credit_for_noise():
  """40 random sets around `random`, each a little different; the neutral prompt at 0.1."""
  def rows(original, top, random, neutral=0.1):
    made = [row("c", "cat", "none", 0, original), row("c", "cat", "top", 2, top),
            row("c", "cat", "neutral", 0, neutral)]
    made += [row("c", "cat", "random", 2, random + 0.01 * (d % 10 - 5), draw=d) for d in range(40)]
    for r in made:
      r["context"] = [1.0] * len(SPREAD)
    return made
  verdict = lambda r: summary.summarize(r)[0]["localized"]
  assert verdict(rows(0.9, 0.1, 0.8)) is True
  assert verdict(rows(0.1, 0.0, 0.1)) is None            # the model never showed the concept
  assert verdict(rows(0.9, 0.88, 0.9)) is False          # top-K no more than many random sets


def test_summary_reports_the_reverse_controls():
  """Issue 19, item 5: the reverse experiment next to its random-K draws and the neutral prompt."""
  rows = make_rows() + [
      row("van gogh", "style", "neutral", 0, 0.1), row("monet", "style", "neutral", 0, 0.2),
      row("van gogh", "style", "reverse_random", 2, 0.3, draw=0),
      row("van gogh", "style", "reverse_random", 2, 0.2, draw=1),
      row("monet", "style", "reverse_random", 2, 0.1, draw=0)]
  style = {e["k"]: e for e in summary.summarize(rows) if e["category"] == "style"}
  assert style[2]["reverse_presence"] == pytest.approx(0.5)            # (0.6 + 0.4) / 2
  assert style[2]["reverse_random_presence"] == pytest.approx(0.175)   # (0.25 + 0.1) / 2 per concept
  assert style[2]["reverse_random_draws"] == 2
  assert style[2]["neutral_presence"] == pytest.approx(0.15)           # the same at every K
  assert style[4]["neutral_presence"] == pytest.approx(0.15)
  assert style[4]["reverse_random_presence"] is None
  table = tables.summary_table(rows)
  controls = table.split("Other controls\n")[1].splitlines()[0]
  assert "neutral" in controls and "rev random" in controls
  assert "0.175" in table and "0.150" in table


def test_auto_k_reads_the_curve_with_its_rule_stated():
  """Issue 19, item 6: K read off a grid, the swept K and the interpolated crossing both given."""
  rows = [row("x", "c", "none", 0, 0.9), row("x", "c", "top", 2, 0.6), row("x", "c", "top", 4, 0.2),
          row("x", "c", "top", 6, 0.1)]
  read = summary.read_k(rows, "c", 0.5)
  assert read["k"] == 4 and read["swept"] == [0, 2, 4, 6]
  assert read["k_crossing"] == pytest.approx(2.5)     # 0.6 -> 0.2 between K=2 and K=4 crosses 0.5
  assert summary.read_k(rows, "c", 0.05) == {**summary.read_k(rows, "c", 0.05), "k": None,
                                                 "k_crossing": None}
  assert summary.read_k(rows, "c", 0.95)["k_crossing"] == 0.0   # already below at K=0
  assert "smallest swept K" in summary.AUTO_K_RULE
  assert summary.AUTO_K_RULE.splitlines()[0] in tables.summary_table(rows)
