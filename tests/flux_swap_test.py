"""FLUX interventions against a PyTorch reference of the paper's rule, built on diffusers alone.

The reference (arXiv 2505.18832, ArmanZarei/DiT-Knowledge-Localization) installs attention
processors on diffusers' FluxTransformer2DModel: a neutral-prompt pass SAVES the text input of each
selected block's attention (double blocks: the `encoder_hidden_states` the processor receives, i.e.
norm1_context's output; single blocks: the first S tokens of the `hidden_states` it receives), and
the main pass from the same noise OVERWRITES only that input. It shares no code with dit_jax: only
the weights are converted. One transformer forward at a fixed timestep suffices, since the rule is
the same at every sampling step.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dit_jax.models.interventions import ConceptProbe, TextAttentionSwap, TextResidualSwap
from dit_jax.families.flux import latent_image_ids
from dit_jax import families
from dit_jax.pipeline import loading
from tests.flux_test import tiny_torch_model
from tests.testutil import rel_error

torch.set_grad_enabled(False)

DOUBLE, SINGLE = 3, 3
PAIRS, TEXT_LEN, GRID = 2, 5, (4, 4)
# Blocks are numbered double-stream first, then single-stream (3..5 are single blocks 0..2).
SELECTIONS = {"double block 1": (1,), "single block 1": (4,), "mixed": (0, 2, 3, 5), "every": tuple(range(6))}


class SaveOrOverwrite:
  """Wraps diffusers' processor: "save" keeps the attention's text input, "overwrite" replaces it."""

  def __init__(self, inner, text_len):
    self.inner, self.text_len = inner, text_len
    self.mode, self.saved = None, None

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
               image_rotary_emb=None):
    double = encoder_hidden_states is not None
    text = encoder_hidden_states if double else hidden_states[:, :self.text_len]
    if self.mode == "save":
      self.saved = text.clone()
    elif self.mode == "overwrite":
      if double:
        encoder_hidden_states = self.saved
      else:   # the paper writes in place; the block's MLP has already read these states
        hidden_states = torch.cat([self.saved, hidden_states[:, self.text_len:]], dim=1)
    return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)


def torch_inputs(noise, text, pooled, timestep, guidance):
  b = noise.shape[0]
  return dict(hidden_states=torch.from_numpy(noise), encoder_hidden_states=torch.from_numpy(text),
              pooled_projections=torch.from_numpy(pooled),
              timestep=torch.full((b,), timestep), guidance=torch.full((b,), guidance),
              img_ids=torch.from_numpy(latent_image_ids(*GRID)), txt_ids=torch.zeros(TEXT_LEN, 3))


def paper_reference(model, main, other, blocks):
  """The main prompt's output with the selected blocks' attention text input taken from `other`."""
  attns = [b.attn for b in list(model.transformer_blocks) + list(model.single_transformer_blocks)]
  originals = [a.processor for a in attns]
  wrappers = {i: SaveOrOverwrite(originals[i], TEXT_LEN) for i in blocks}
  try:
    for i, wrapper in wrappers.items():
      attns[i].set_processor(wrapper)
    for wrapper in wrappers.values():
      wrapper.mode = "save"
    model(**other)                                    # the neutral trajectory, same noise
    for wrapper in wrappers.values():
      wrapper.mode = "overwrite"
    return model(**main).sample.numpy()
  finally:
    for attn, processor in zip(attns, originals):
      attn.set_processor(processor)


@pytest.fixture(scope="module")
def setup():
  model = tiny_torch_model(num_layers=DOUBLE, num_single_layers=SINGLE)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, params = loading.from_state_dict(families.get("flux"), dict(model.config), state)
  rng = np.random.default_rng(3)
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  cfg = model.config
  noise = normal(PAIRS, GRID[0] * GRID[1], cfg.in_channels)
  concept = (normal(PAIRS, TEXT_LEN, cfg.joint_attention_dim), normal(PAIRS, cfg.pooled_projection_dim))
  neutral = (normal(PAIRS, TEXT_LEN, cfg.joint_attention_dim), normal(PAIRS, cfg.pooled_projection_dim))
  timestep, guidance = 0.6, 3.5
  torch_in = {"concept": torch_inputs(noise, *concept, timestep, guidance),
              "neutral": torch_inputs(noise, *neutral, timestep, guidance)}
  # Ours: one batch, rows 0..n-1 the concept, n..2n-1 the neutral prompt, from the same noise.
  batch = 2 * PAIRS
  ours_in = dict(hidden_states=np.concatenate([noise, noise]),
                 encoder_hidden_states=np.concatenate([concept[0], neutral[0]]),
                 pooled_projections=np.concatenate([concept[1], neutral[1]]),
                 timestep=np.full((batch,), timestep, np.float32),
                 guidance=np.full((batch,), guidance, np.float32),
                 img_ids=latent_image_ids(*GRID), txt_ids=np.zeros((TEXT_LEN, 3), np.float32))
  return model, jax.jit(module.apply), params, torch_in, ours_in


def mask_of(blocks):
  mask = np.zeros(DOUBLE + SINGLE, bool)
  mask[list(blocks)] = True
  return jnp.asarray(mask)


FORWARD = np.array([2, 3, 2, 3], np.int32)    # concept rows read the neutral rows' attention input
BACKWARD = np.array([0, 1, 0, 1], np.int32)   # reverse: neutral rows read the concept rows'


def ours(setup, swap, **kwargs):
  _, apply, params, _, ours_in = setup
  return np.asarray(apply({"params": params}, **ours_in, text_swap=swap, **kwargs), np.float32)


@pytest.mark.parametrize("name", list(SELECTIONS))
def test_attention_swap_matches_the_papers_processors(setup, name):
  model, _, _, torch_in, _ = setup
  blocks = SELECTIONS[name]
  swapped = ours(setup, TextAttentionSwap(mask_of(blocks), jnp.asarray(FORWARD)))
  reference = paper_reference(model, torch_in["concept"], torch_in["neutral"], blocks)
  err = rel_error(swapped[:PAIRS], reference)
  print(f"attention swap, {name} {blocks}: rel error vs diffusers processors {err:.2e}")
  assert err < 1e-5, (name, err)
  # The neutral trajectory is never touched.
  neutral = model(**torch_in["neutral"]).sample.numpy()
  assert rel_error(swapped[PAIRS:], neutral) < 1e-5
  assert rel_error(swapped[:PAIRS], model(**torch_in["concept"]).sample.numpy()) > 1e-3


@pytest.mark.parametrize("name", ["double block 1", "mixed"])
def test_reverse_attention_swap_matches_the_papers_processors(setup, name):
  model, _, _, torch_in, _ = setup
  blocks = SELECTIONS[name]
  swapped = ours(setup, TextAttentionSwap(mask_of(blocks), jnp.asarray(BACKWARD)))
  reference = paper_reference(model, torch_in["neutral"], torch_in["concept"], blocks)
  err = rel_error(swapped[PAIRS:], reference)
  print(f"reverse attention swap, {name} {blocks}: rel error vs diffusers processors {err:.2e}")
  assert err < 1e-5, (name, err)
  assert rel_error(swapped[:PAIRS], model(**torch_in["concept"]).sample.numpy()) < 1e-5


def test_no_selection_is_the_plain_forward_bit_for_bit(setup):
  plain = ours(setup, None)
  for swap in (TextAttentionSwap, TextResidualSwap):
    np.testing.assert_array_equal(ours(setup, swap(mask_of(()), jnp.asarray(FORWARD))), plain)


def test_concept_scores_under_the_attention_swap(setup):
  _, apply, params, _, ours_in = setup
  weights = jnp.asarray(np.tile([0, 1, 1, 0, 0], (2 * PAIRS, 1)), jnp.float32)
  run = lambda swap: apply({"params": params}, **ours_in, text_swap=swap, concept=ConceptProbe(weights))
  out, scores = run(None)
  none_out, none_scores = run(TextAttentionSwap(mask_of(()), jnp.asarray(FORWARD)))
  np.testing.assert_array_equal(np.asarray(none_scores), np.asarray(scores))
  np.testing.assert_array_equal(np.asarray(none_out), np.asarray(out))
  swap = TextAttentionSwap(mask_of(SELECTIONS["mixed"]), jnp.asarray(FORWARD))
  swapped_out, swapped_scores = run(swap)
  assert swapped_scores.shape == (2 * PAIRS, DOUBLE + SINGLE, 3)
  assert np.all(np.asarray(swapped_scores) > 0)
  # Scoring adds ops beside the attention, which XLA may fuse differently: float32 rounding only
  # (a few ulp of outputs of order 1), never the intervention itself.
  np.testing.assert_allclose(np.asarray(swapped_out), ours(setup, swap), rtol=0, atol=2e-6)
  # Scoring reads the swapped attention in the concept rows and leaves the neutral rows alone.
  assert rel_error(np.asarray(swapped_scores)[:PAIRS], np.asarray(scores)[:PAIRS]) > 1e-3
  np.testing.assert_allclose(np.asarray(swapped_scores)[PAIRS:], np.asarray(scores)[PAIRS:],
                             rtol=1e-5, atol=1e-7)


def test_vmapped_sweep_equals_one_call_per_mask(setup):
  _, apply, params, _, ours_in = setup
  masks = jnp.eye(DOUBLE + SINGLE, dtype=bool)
  call = lambda m: apply({"params": params}, **ours_in, text_swap=TextAttentionSwap(m, jnp.asarray(FORWARD)))
  sweep = np.asarray(jax.jit(jax.vmap(call))(masks))
  for i in range(DOUBLE + SINGLE):
    single = ours(setup, TextAttentionSwap(masks[i], jnp.asarray(FORWARD)))
    np.testing.assert_allclose(sweep[i], single, rtol=0, atol=1e-5)


def test_residual_swap_is_a_different_named_control(setup):
  model, _, _, torch_in, _ = setup
  for name in ("double block 1", "mixed"):
    mask = mask_of(SELECTIONS[name])
    attention = ours(setup, TextAttentionSwap(mask, jnp.asarray(FORWARD)))
    residual = ours(setup, TextResidualSwap(mask, jnp.asarray(FORWARD)))
    diff = rel_error(residual[:PAIRS], attention[:PAIRS])
    print(f"{name}: residual vs attention swap differ by {diff:.2e}")
    assert diff > 1e-3, name
    np.testing.assert_allclose(residual[PAIRS:], attention[PAIRS:], rtol=0, atol=1e-6)
  # Replacing the whole text stream at block 0 makes the concept rows what the neutral T5 text gives
  # (with the concept's pooled vector): the depth confound of the control. The attention swap of
  # block 0 does not.
  neutral_text = model(**dict(torch_in["concept"],
                              encoder_hidden_states=torch_in["neutral"]["encoder_hidden_states"]))
  neutral_text = neutral_text.sample.numpy()
  first = mask_of((0,))
  assert rel_error(ours(setup, TextResidualSwap(first, jnp.asarray(FORWARD)))[:PAIRS], neutral_text) < 1e-5
  assert rel_error(ours(setup, TextAttentionSwap(first, jnp.asarray(FORWARD)))[:PAIRS], neutral_text) > 1e-3
