"""Block edits (bypass, activation patching) against diffusers with PyTorch hooks, the localizers on a
tiny model whose knowledge sits in one block by construction, and their agreement against scipy.

The references share no code with dit_jax: a forward hook on diffusers' block returns the block's
input (bypass), or saves the block's output in a source pass and returns it in the target pass
(patching). Only the weights are converted.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import torch

from dit_jax.localize import agreement, localizers
from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.models.interventions import BlockEdit
from dit_jax.knowledge import PromptPair
from dit_jax.localize.records import ScoreRecord
from tests import flux_test, pixart_test
from tests.testutil import nchw_to_nhwc, rel_error

torch.set_grad_enabled(False)


# ------------------------------------------------------------------ references: PyTorch hooks


class BlockHook:
  """A forward hook on one diffusers block: "bypass" returns the block's image input as its image
  output; "save" keeps the image output; "overwrite" returns the saved one. `image` picks the image
  part of the block's output (PixArt: the output; FLUX: hidden_states, the second of the pair)."""

  def __init__(self, block, flux: bool):
    self.flux, self.mode, self.saved = flux, None, None
    self.handle = block.register_forward_hook(self, with_kwargs=True)

  def __call__(self, module, args, kwargs, output):
    image_in = kwargs["hidden_states"] if self.flux else args[0]
    image_out = output[1] if self.flux else output
    if self.mode == "save":
      self.saved = image_out.clone()
      return output
    new = {"bypass": image_in, "overwrite": self.saved}.get(self.mode)
    if new is None:
      return output
    return (output[0], new) if self.flux else new


def run_with_hook(block, flux, forward, target, source=None, mode="bypass"):
  hook = BlockHook(block, flux)
  try:
    if source is not None:
      hook.mode = "save"
      forward(source)
    hook.mode = "overwrite" if source is not None else mode
    return forward(target)
  finally:
    hook.handle.remove()


def one_hot(n, blocks):
  mask = np.zeros(n, bool)
  mask[list(blocks)] = True
  return jnp.asarray(mask)


def concat(a: dict, b: dict, shared=()) -> dict:
  return {k: v if k in shared else np.concatenate([v, b[k]]) for k, v in a.items()}


# ------------------------------------------------------------------ PixArt


@pytest.fixture(scope="module")
def pixart():
  model = pixart_test.tiny_torch_model(**pixart_test.CONFIGS["alpha_512"])
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, params = loading.from_state_dict(families.get("pixart"), dict(model.config), state)
  target = pixart_test.random_inputs(model)
  # The source run: another caption from the same latents and timesteps (the patching setting).
  source = {**pixart_test.random_inputs(model, seed=7), "latents": target["latents"],
            "timestep": target["timestep"]}
  return model, module, params, target, source


def pixart_ours(module, params, inputs, edit=None):
  return pixart_test.flax_forward(module, params, inputs, block_edit=edit)


@pytest.mark.parametrize("block", [0, 2])
def test_pixart_bypass_matches_an_identity_hook(pixart, block):
  model, module, params, target, _ = pixart
  n, batch = model.config.num_layers, len(target["latents"])
  edit = BlockEdit(one_hot(n, [block]), one_hot(n, []), jnp.arange(batch, dtype=jnp.int32))
  ours = pixart_ours(module, params, target, edit)
  reference = run_with_hook(model.transformer_blocks[block], False,
                            lambda x: pixart_test.torch_forward(model, x), target)
  err = rel_error(ours, reference)
  print(f"PixArt bypass of block {block}: rel error vs diffusers hook {err:.2e}")
  assert err < 1e-5
  assert rel_error(ours, pixart_test.torch_forward(model, target)) > 1e-3   # the edit did something


@pytest.mark.parametrize("block", [0, 1])
def test_pixart_patching_matches_a_save_and_overwrite_hook(pixart, block):
  model, module, params, target, source = pixart
  n, batch = model.config.num_layers, len(target["latents"])
  # One batch: target rows first, source rows after; target row b reads source row b + batch.
  rows = np.arange(2 * batch)
  edit = BlockEdit(one_hot(n, []), one_hot(n, [block]),
                   jnp.asarray(np.where(rows < batch, rows + batch, rows), jnp.int32))
  ours = pixart_ours(module, params, concat(target, source), edit)
  forward = lambda x: pixart_test.torch_forward(model, x)
  reference = run_with_hook(model.transformer_blocks[block], False, forward, target, source)
  err = rel_error(ours[:batch], reference)
  print(f"PixArt patching of block {block}: rel error vs diffusers hooks {err:.2e}")
  assert err < 1e-5
  assert rel_error(ours[batch:], forward(source)) < 1e-5          # the source rows run as alone
  assert rel_error(ours[:batch], forward(target)) > 1e-3


def test_pixart_empty_edit_is_the_plain_forward_bit_for_bit(pixart):
  model, module, params, target, _ = pixart
  n, batch = model.config.num_layers, len(target["latents"])
  plain = pixart_ours(module, params, target)
  for source in (np.arange(batch), np.arange(batch)[::-1]):
    edit = BlockEdit(one_hot(n, []), one_hot(n, []), jnp.asarray(source, jnp.int32))
    np.testing.assert_array_equal(pixart_ours(module, params, target, edit), plain)


def test_block_edit_of_the_wrong_length_is_named(pixart):
  model, module, params, target, _ = pixart
  edit = BlockEdit(one_hot(2, []), one_hot(2, []), jnp.arange(2, dtype=jnp.int32))
  with pytest.raises(ValueError, match="block_edit.bypass needs 3 entries"):
    pixart_ours(module, params, target, edit)


# ------------------------------------------------------------------ FLUX

DOUBLE, SINGLE = 2, 2


@pytest.fixture(scope="module")
def flux():
  model = flux_test.tiny_torch_model(num_layers=DOUBLE, num_single_layers=SINGLE)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, params = loading.from_state_dict(families.get("flux"), dict(model.config), state)
  target = flux_test.random_inputs(model)
  source = {**flux_test.random_inputs(model, seed=5), "hidden_states": target["hidden_states"],
            "timestep": target["timestep"], "guidance": target["guidance"]}
  return model, module, params, target, source


def flux_block(model, index):
  return (model.transformer_blocks[index] if index < DOUBLE
          else model.single_transformer_blocks[index - DOUBLE])


FLUX_IDS = ("img_ids", "txt_ids")   # positions: shared by every row, not batched


@pytest.mark.parametrize("block", [1, DOUBLE], ids=["double block 1", "single block 0"])
def test_flux_bypass_and_patching_match_hooks(flux, block):
  model, module, params, target, source = flux
  n, batch = DOUBLE + SINGLE, len(target["hidden_states"])
  forward = lambda x: flux_test.torch_forward(model, x)
  ours = lambda inputs, edit: flux_test.flax_forward(module, params, inputs, block_edit=edit)

  bypass = ours(target, BlockEdit(one_hot(n, [block]), one_hot(n, []),
                                  jnp.arange(batch, dtype=jnp.int32)))
  reference = run_with_hook(flux_block(model, block), True, forward, target)
  err = rel_error(bypass, reference)
  print(f"FLUX bypass of block {block}: rel error vs diffusers hook {err:.2e}")
  assert err < 1e-5 and rel_error(bypass, forward(target)) > 1e-3

  rows = np.arange(2 * batch)
  edit = BlockEdit(one_hot(n, []), one_hot(n, [block]),
                   jnp.asarray(np.where(rows < batch, rows + batch, rows), jnp.int32))
  patched = ours(concat(target, source, shared=FLUX_IDS), edit)
  reference = run_with_hook(flux_block(model, block), True, forward, target, source)
  err = rel_error(patched[:batch], reference)
  print(f"FLUX patching of block {block}: rel error vs diffusers hooks {err:.2e}")
  assert err < 1e-5 and rel_error(patched[:batch], forward(target)) > 1e-3
  assert rel_error(patched[batch:], forward(source)) < 1e-5


def test_flux_empty_edit_is_the_plain_forward(flux):
  # Not bit for bit: XLA's CPU backend drops optimization barriers before fusing, and fuses the
  # (unselected) edit with the last blocks' residual updates, which then round differently.
  _, module, params, target, _ = flux
  batch = len(target["hidden_states"])
  plain = flux_test.flax_forward(module, params, target)
  edit = BlockEdit(one_hot(DOUBLE + SINGLE, []), one_hot(DOUBLE + SINGLE, []),
                   jnp.asarray(np.arange(batch)[::-1], jnp.int32))
  np.testing.assert_allclose(flux_test.flax_forward(module, params, target, block_edit=edit), plain,
                             rtol=0, atol=1e-6)


# ------------------------------------------------------------------ agreement


def test_kendall_tau_and_top_k_overlap():
  scores = np.array([0.3, 0.1, 0.9, 0.5, 0.7])
  assert agreement.kendall_tau(scores, scores) == pytest.approx(1.0)
  assert agreement.kendall_tau(scores, -scores) == pytest.approx(-1.0)
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal(12), rng.standard_normal(12)
  assert agreement.kendall_tau(a, b) == pytest.approx(scipy.stats.kendalltau(a, b).statistic)
  # Top-2 of scores: blocks 2 and 4; of the other: blocks 2 and 0 -> one of two shared.
  assert agreement.top_k_overlap(scores, np.array([0.8, 0, 0.9, 0.1, 0.2]), 2) == 0.5
  assert agreement.top_k_overlap(scores, scores, 3) == 1.0
  assert np.isnan(agreement.kendall_tau(np.ones(5), scores))   # a constant score ranks nothing


# ------------------------------------------------------------------ localizers, planted by construction

from dit_jax.localize import judges  # noqa: E402
from dit_jax.pipeline.text2image import Text2Image  # noqa: E402
from tests.pipeline_test import pixart_folder  # noqa: E402,F401  (fixture)

PAIRS = [PromptPair("a dog in the snow", "a cat in the snow", "dog", "animal"),
         PromptPair("a red dog", "a blue car", "dog", "animal")]
SEEDS, SIZE = (0,), (16, 16)


class LooksLikeTheConcept(judges.Judge):
  """A fake judge: presence = how close an image is to the concept prompt's original image."""

  def __init__(self, reference):
    super().__init__()
    self.reference = reference.astype(np.float64)

  def _presence(self, images, pairs):
    return 1 - np.abs(images.astype(np.float64) - self.reference).mean(axis=(1, 2, 3)) / 255


@pytest.fixture(scope="module")
def planted(pixart_folder):  # noqa: F811
  """A tiny PixArt whose blocks but the last add nothing (zero output projections): only the last
  block reads the text and only it changes the image, so every localizer must rank it first."""
  folder, _ = pixart_folder
  pipe = Text2Image("pixart", str(folder), num_steps=2, guidance_scale=4.5, max_sequence_length=12)
  n = pipe.module.config.num_blocks
  params = dict(pipe.params)
  for i in range(n - 1):
    block = jax.tree_util.tree_map(lambda x: x, params[f"transformer_blocks.{i}"])
    # No residual update, and no value for the attention scores to read.
    for part in (("attn1", "to_out.0"), ("attn2", "to_out.0"), ("attn2", "to_v"), ("ff", "net.2")):
      block[part[0]][part[1]] = jax.tree_util.tree_map(jnp.zeros_like, block[part[0]][part[1]])
    params[f"transformer_blocks.{i}"] = block
  pipe.params = params
  reference = pipe([p.prompt for p in PAIRS for _ in SEEDS], list(SEEDS) * len(PAIRS), *SIZE)
  return pipe, LooksLikeTheConcept(reference)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["causal", "bypass", "patching", "attention"])
def test_localizer_ranks_the_planted_block_first(planted, name):
  pipe, judge = planted
  n = pipe.module.config.num_blocks
  record = localizers.get(name).score(pipe, PAIRS, SEEDS, SIZE, 4, judge=judge, chunk=3)
  assert record.localizer == name
  for variant in localizers.get(name).variants:
    scores = record.scores(variant)
    assert scores.shape == (n,)
    print(f"{name} {variant}: {np.round(scores, 4)}")
    assert localization_rank(scores)[0] == n - 1
  if name != "attention":
    assert len(record.presence) == n and record.baseline is not None
    # Blocks that add nothing change nothing: no score but the planted block's (up to a uint8
    # rounding flip of a pixel here and there: the planted block scores above 1e-2).
    np.testing.assert_allclose(record.scores("with_wo")[:-1], 0, atol=1e-3)
  if name == "bypass":
    assert record.image_change[-1] > 0 and max(record.image_change[:-1]) < 1e-6


def localization_rank(scores):
  from dit_jax.blocks import rank_blocks
  return rank_blocks(scores)


def test_intervention_localizers_need_the_judge(planted):
  pipe, _ = planted
  for name in ("causal", "bypass", "patching"):
    with pytest.raises(ValueError, match=f"the '{name}' localizer judges images"):
      localizers.get(name).score(pipe, PAIRS, SEEDS, SIZE, 4)


def test_old_score_records_read_back():
  old = {"category": "animal", "with_wo": [1.0, 2.0], "without_wo": [0.5, 0.1],
         "per_step_with_wo": [[1.0, 2.0]], "num_prompts": 1, "num_seeds": 1, "num_steps": 1,
         "localizer": "attention"}
  record = ScoreRecord.from_dict(old)
  assert record.presence == [] and record.baseline is None and record.image_change == []
  assert localizers.named_scores("attention", old) == {"attention:with_wo": [1.0, 2.0],
                                                       "attention:without_wo": [0.5, 0.1]}


# ------------------------------------------------------------------ the localize job


@pytest.mark.slow
def test_localize_scores_with_every_localizer_and_writes_agreement(tmp_path):
  import json
  import os
  from tests.localize_cli_test import run_localize
  names = ("attention", "causal", "bypass", "patching")
  quick = dict(num_steps=2, ks=(2,), random_draws=1, reverse_draws=1, localizers=names)
  run_localize(tmp_path, **quick)
  for name in names[1:]:
    record = json.loads((tmp_path / "scores" / name / "circle.json").read_text())
    assert record["localizer"] == name and len(record["with_wo"]) == 12
  assert json.loads((tmp_path / "scores" / "circle.json").read_text())["localizer"] == "attention"
  table = json.loads((tmp_path / "agreement.json").read_text())
  assert table["k"] == 2 and table["localizers"][:2] == ["attention:with_wo", "attention:without_wo"]
  assert set(table["by_category"]) == {"shape", "place", "all"}
  pair = table["by_category"]["all"]["causal vs bypass"]
  assert set(pair) == {"kendall_tau", "top_k_overlap", "concepts"}
  assert (tmp_path / "agreement.png").stat().st_size > 0
  # Dropping a localizer keeps the others' scores; the ranking one must score.
  stamp = os.path.getmtime(tmp_path / "scores" / "causal" / "circle.json")
  run_localize(tmp_path, **dict(quick, localizers=names[:2]))
  assert os.path.getmtime(tmp_path / "scores" / "causal" / "circle.json") == stamp
  with pytest.raises(ValueError, match="config.sweep.localizer='causal' ranks the blocks"):
    run_localize(tmp_path, **dict(quick, localizer="causal", localizers=("attention",)))
  with pytest.raises(ValueError, match="unknown localizer|'nope'"):
    run_localize(tmp_path, **dict(quick, localizers=("attention", "nope")))
