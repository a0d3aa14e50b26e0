"""The planted-knowledge benchmark (studies/planted_knowledge.py) and the confinement it plants
with (trainer.confine_text): knowledge put where we say it is, and scored against that."""
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.train import trainer
from dit_jax.shapes import ASSETS


@pytest.fixture(scope="module")
def shapes_model():
  return loading.load(str(ASSETS), "pixart")


def zero_cross_attention(params, block):
  """params with block `block`'s cross-attention output (attn2.to_out) zeroed: it adds nothing."""
  blocks = dict(params)
  attn2 = dict(blocks[f"transformer_blocks.{block}"]["attn2"])
  attn2["to_out.0"] = jax.tree_util.tree_map(jnp.zeros_like, attn2["to_out.0"])
  blocks[f"transformer_blocks.{block}"] = {**blocks[f"transformer_blocks.{block}"], "attn2": attn2}
  return blocks


@pytest.mark.parametrize("confine", ["3", ""])
def test_confined_captions_reach_only_the_chosen_blocks(shapes_model, confine):
  """With confine_text_to="3" the caption acts through block 3 alone: once block 3's
  cross-attention adds nothing, changing the caption changes nothing (the other blocks read the
  neutral caption), while silencing another block leaves the caption's effect. Unconfined, the
  caption reaches every block. The probe is the model's output, not the swap's own arithmetic."""
  module, params = shapes_model
  family = families.get("pixart")
  config = ml_collections.ConfigDict(dict(confine_text_to=confine, concept="", k=0, model="pixart",
                                          data="shapes_planted"))
  predict = family.predictor(module, 1.0)
  output = trainer.confine_text(lambda p, batch, key, teacher: predict(p, batch["x0"], 500, batch["cond"]),
                                config, family, module)
  rng = np.random.default_rng(0)
  caption = lambda: jnp.asarray(rng.normal(size=(2, 6, module.config.caption_channels)), jnp.float32)
  mask = jnp.ones((2, 6), jnp.float32)
  x0 = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)
  neutral = {"cond": {"caption": caption(), "caption_mask": mask}}
  one, two = caption(), caption()
  run = lambda p, c: np.asarray(output(p, {"x0": x0, "cond": {"caption": c, "caption_mask": mask},
                                           "neutral": neutral}, None, None))
  effect = lambda p: float(np.abs(run(p, one) - run(p, two)).max())
  assert effect(params) > 1e-3                          # the caption matters
  assert effect(zero_cross_attention(params, 5)) > 1e-3  # block 5 is not the only reader
  if confine:
    assert effect(zero_cross_attention(params, 3)) < 1e-6    # block 3 was the only way in
  else:
    assert effect(zero_cross_attention(params, 3)) > 1e-3


def test_confinement_is_refused_where_it_cannot_apply(shapes_model):
  module, _ = shapes_model
  config = ml_collections.ConfigDict(dict(confine_text_to="all", concept="", k=0, model="pixart",
                                          data="folder"))
  with pytest.raises(ValueError, match="confines nothing"):
    trainer.confine_text(None, config, families.get("pixart"), module)
  config.confine_text_to = "2"
  with pytest.raises(ValueError, match="cross-attention family"):
    trainer.confine_text(None, ml_collections.ConfigDict(dict(config, model="flux")),
                         families.get("flux"), module)
  confined = trainer.confine_text(lambda *a: 0.0, config, families.get("pixart"), module)
  with pytest.raises(Exception, match="gives no 'neutral' captions"):
    confined(None, {"cond": {}}, None, None)


def test_weight_change_ranks_the_block_that_changed(shapes_model):
  from studies import planted_knowledge as pk
  _, params = shapes_model
  tuned = dict(params)
  tuned["transformer_blocks.7"] = jax.tree_util.tree_map(lambda x: x * 1.1, params["transformer_blocks.7"])
  change = pk.weight_change(params, tuned, 12)
  assert change[7] == pytest.approx(0.1, rel=1e-5)
  assert [c for b, c in enumerate(change) if b != 7] == [0.0] * 11


def planted_row(label, look, found, causal, method="confined", planted=(1, 5, 9), change=None):
  scores = np.full(12, 0.1)
  scores[list(found)] = 1.0
  row = {"label": label, "name": "quib", "method": method, "planted_blocks": list(planted),
         "look_accuracy": look, "scores": scores.tolist(), "base_scores": np.full(12, 0.1).tolist(),
         "causal": causal, "localizer_scores": {"causal": scores.tolist()}}
  if change is not None:
    row["weight_change"] = change
  return row


def test_summary_counts_plantings_that_took_with_intervals_and_baselines():
  from studies import planted_knowledge as pk
  holds = {"original": 0.8, "planted": 0.1, "random": [0.7, 0.8, 0.75]}
  fails = {"original": 0.8, "planted": 0.6, "random": [0.5, 0.6]}
  uniform = np.linspace(0, 1, 12)     # the last blocks changed most
  rows = [planted_row("a", 0.8, [1, 5, 9], holds, change=uniform.tolist()),
          planted_row("b", 0.09, [1, 5, 9], holds),                      # did not take
          planted_row("c", 0.6, [0, 2, 9], fails, change=uniform.tolist()),
          planted_row("d", 0.7, [3], holds, planted=(3,), change=uniform.tolist()),
          planted_row("old", 0.7, [0, 2, 3], holds, method="blocks")]
  result = pk.summarize(rows, look_floor=0.5)
  confined, old = result["confined"], result["blocks"]
  assert confined["sets"] == 4 and confined["counted"] == 3 and confined["not_counted"] == ["b"]
  attention = confined["precision"]["causal"]
  assert attention["mean"] == pytest.approx((1 + 1 / 3 + 1) / 3) and attention["sets"] == 3
  low, high = attention["interval"]
  assert low <= attention["mean"] <= high and high - low > 0.1
  assert confined["precision"][pk.WEIGHT_CHANGE]["mean"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
  assert confined["precision"][pk.RANDOM]["mean"] == pytest.approx((3 / 12 + 3 / 12 + 1 / 12) / 3)
  assert confined["causal_holds"] == 2                           # a and d yes, c no (random hurts too)
  assert rows[2]["localizer_precision"]["causal"] == pytest.approx(1 / 3)      # per row, per source
  assert rows[0]["causal_drop_planted"] == pytest.approx(0.7)
  assert rows[0]["causal_drop_random"] == pytest.approx(0.05)
  assert old["counted"] == 1 and old["precision"]["causal"]["mean"] == 0.0
  assert old["precision"]["causal"]["interval"] is None          # one set: no interval
  assert "| causal | 0.78 |" in pk.table({"summary": result})


def test_claims_follow_paired_intervals_against_both_baselines():
  from studies import planted_knowledge as pk
  holds = {"original": 0.8, "planted": 0.1, "random": [0.7]}
  plantings = [(1, 5, 9), (2, 6, 10), (3,), (0, 4, 7), (4, 5), (8,), (6, 7, 8)]
  rows = []
  for i, planted in enumerate(plantings):
    row = planted_row(f"p{i}", 0.8, planted, holds, planted=planted,
                      change=np.linspace(0, 1, 12).tolist())          # always the last blocks
    row["localizer_scores"]["misses"] = np.roll(row["scores"], 1 + i % 5).tolist()
    rows.append(row)
  rows.append(planted_row("weak", 0.1, [1], holds, planted=(1,)))
  summary = pk.summarize(rows, look_floor=0.5)
  versus = summary["confined"]["versus_baselines"]
  assert versus["causal"][pk.RANDOM]["pairs"] == 7
  assert versus["causal"][pk.RANDOM]["interval"][0] > 0
  words = pk.claims(summary)
  assert "Above both baselines (paired intervals exclude 0): causal." in words
  assert "Not shown above the random ranking: misses." in words
  assert "did not take: weak." in words
  # Below paired.MIN_PAIRS plantings nothing is said either way.
  few_summary = pk.summarize(rows[:3], look_floor=0.5)
  few = pk.claims(few_summary)
  assert "Not yet said" in few and "Above both" not in few
  # ... and the table prints no interval there (a bootstrap of 2-5 values undercovers), only n.
  causal_row = next(line for line in pk.table({"summary": few_summary}).splitlines()
                    if line.startswith("| causal |"))
  assert "[" not in causal_row and causal_row.count("(n = 3)") == 2 and "| n = 3 |" in causal_row


@pytest.mark.slow   # fine-tunes the Shapes model for 2 steps and runs every localizer on 2 prompts
def test_harness_at_its_tiny_preset_writes_a_unit_and_resumes(tmp_path, monkeypatch):
  from studies import planted_knowledge as pk
  args = ["--preset", "tiny", "--only", "single-4", "--out", str(tmp_path / "runs"),
          "--units", str(tmp_path / "units"), "--result", str(tmp_path / "planted.json")]
  pk.main(args)
  unit = json.loads((tmp_path / "units" / "single-4.json").read_text())
  assert unit["method"] == "confined" and unit["planted_blocks"] == [4]
  assert len(unit["weight_change"]) == 12 and min(unit["weight_change"]) > 0   # every block trains
  selection = json.loads((tmp_path / "runs" / "single-4_steps2" / "selection.json").read_text())
  assert selection["blocks"] == "all"
  assert unit["causal"]["random_blocks"] and 4 not in sum(unit["causal"]["random_blocks"], [])
  # A rerun measures nothing again: the unit is there.
  monkeypatch.setattr(pk, "measure_planting", lambda *a: pytest.fail("measured twice"))
  result = pk.main(args)
  assert result["summary"]["confined"]["sets"] == 1
