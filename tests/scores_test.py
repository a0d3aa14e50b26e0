"""Attention-contribution scores vs a plain PyTorch reference from diffusers' attention-module inputs."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dit_jax.pipeline import loading
from dit_jax.models.interventions import ConceptProbe
from dit_jax.models.variants import variant_index
from tests.pixart_test import CONFIGS, flax_forward, random_inputs, tiny_torch_model, torch_forward
from tests.testutil import nchw_to_nhwc, rel_error


def reference_scores(attn, hidden, context, key_mask, concept):
  """(B, 2) scores of one diffusers cross-attention from its inputs: the formula, written out."""
  b, t, _ = hidden.shape
  heads = attn.heads
  split = lambda x: x.view(b, x.shape[1], heads, -1).transpose(1, 2)           # (B, N, T, H)
  q, k = attn.to_q(hidden), attn.to_k(context)
  if getattr(attn, "norm_q", None) is not None:                                 # SANA's qk_norm
    q, k = attn.norm_q(q), attn.norm_k(k)
  q, k, v = split(q), split(k), split(attn.to_v(context))
  logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + ((1 - key_mask) * -10000.0)[:, None, None]
  return scores_from_probs(logits.softmax(-1), v, concept, attn.to_out[0].weight)  # over all keys


def scores_from_probs(probs, v, concept, out_weight):
  """(B, 2) scores from attention probabilities (B, heads, queries, keys) and values (B, heads, keys, H)."""
  b, _, t, _ = probs.shape
  contribution = (probs * concept[:, None, None, :]) @ v                        # sum over j in J
  flat = contribution.transpose(1, 2).reshape(b, t, -1)                         # concat heads
  projected = flat @ out_weight.T                                               # W_O, no bias
  return torch.stack([projected.norm(dim=-1).mean(1), flat.norm(dim=-1).mean(1)], dim=-1)


def with_and_without_wo(scores) -> np.ndarray:
  """(..., 2) the with_wo and without_wo scores of a model's (..., VARIANTS) scores, the two the
  references here compute ("paper" has its own, tests/paper_variant_test.py)."""
  return np.asarray(scores)[..., [variant_index("with_wo"), variant_index("without_wo")]]


def expected_scores(model, run, inputs, concept):
  """Run the diffusers model, capture each block's cross-attention inputs, score them by hand."""
  captured = []
  hooks = [block.attn2.register_forward_pre_hook(
      lambda m, args, kwargs: captured.append((m, args[0], kwargs["encoder_hidden_states"])),
      with_kwargs=True) for block in model.transformer_blocks]
  run(model, inputs)
  for h in hooks:
    h.remove()
  mask, weights = torch.from_numpy(inputs["caption_mask"]), torch.from_numpy(concept)
  with torch.no_grad():
    return torch.stack([reference_scores(m, x, c, mask, weights) for m, x, c in captured], 1).numpy()


def concept_on_tokens(mask, tokens=slice(1, 3)):
  concept = np.zeros_like(mask)
  concept[:, tokens] = 1   # tokens 1 and 2 are "the concept"
  return concept


@pytest.mark.slow
def test_pixart_scores_match_reference(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_ms"])
  model.save_pretrained(tmp_path)
  inputs = random_inputs(model)
  concept = concept_on_tokens(inputs["caption_mask"])
  expected = expected_scores(model, torch_forward, inputs, concept)

  module, params = loading.load(str(tmp_path), "pixart")
  out, scores = flax_forward_with_scores(module, params, inputs, concept)
  assert scores.shape == (2, model.config.num_layers, 3)
  assert rel_error(with_and_without_wo(scores), expected) < 1e-4
  # Scoring leaves the output untouched.
  np.testing.assert_array_equal(out, flax_forward(module, params, inputs))


def flax_forward_with_scores(module, params, inputs, concept):
  out, scores = module.apply(
      {"params": params}, jnp.asarray(nchw_to_nhwc(inputs["latents"])), inputs["timestep"],
      inputs["caption"], inputs["caption_mask"], inputs.get("resolution"), inputs.get("aspect_ratio"),
      concept=ConceptProbe(jnp.asarray(concept)))
  return np.asarray(out), np.asarray(scores)


@pytest.mark.parametrize("name", ["base", "sprint"])
def test_sana_scores_match_reference(name, tmp_path):
  from tests import sana_test
  overrides = sana_test.CONFIGS[name]
  model = sana_test.diffusers_model(overrides)
  model.save_pretrained(tmp_path)
  inputs = sana_test.random_inputs({**sana_test.TINY, **overrides})
  concept = concept_on_tokens(inputs["caption_mask"])
  expected = expected_scores(model, sana_test.run_diffusers, inputs, concept)
  module, params = loading.load(str(tmp_path), "sana")
  out, scores = sana_test.run_flax(module, params, inputs, concept=ConceptProbe(jnp.asarray(concept)))
  assert scores.shape == (2, model.config.num_layers, 3)
  assert rel_error(with_and_without_wo(scores), expected) < 1e-4
  np.testing.assert_array_equal(np.asarray(out), sana_test.run_flax(module, params, inputs))


def flux_reference_scores(attn, hidden, context, rope, concept, out_weight):
  """(B, 2) scores of one diffusers FluxAttention from its inputs: image-token queries, softmax over
  text and image keys, concept weights zero over the image keys."""
  from diffusers.models.embeddings import apply_rotary_emb
  heads = lambda x: x.unflatten(-1, (-1, attn.head_dim))                       # (B, T, N, H)
  q, k, v = heads(attn.to_q(hidden)), heads(attn.to_k(hidden)), heads(attn.to_v(hidden))
  q, k = attn.norm_q(q), attn.norm_k(k)
  if context is not None:                                                       # double block
    text_q, text_k = attn.norm_added_q(heads(attn.add_q_proj(context))), attn.norm_added_k(
        heads(attn.add_k_proj(context)))
    q, k = torch.cat([text_q, q], 1), torch.cat([text_k, k], 1)
    v = torch.cat([heads(attn.add_v_proj(context)), v], 1)
  q, k = (apply_rotary_emb(x, rope, sequence_dim=1).transpose(1, 2) for x in (q, k))
  v = v.transpose(1, 2)                                                         # (B, N, T, H)
  text_len = concept.shape[1]
  probs = (q[:, :, text_len:] @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
  weights = torch.cat([concept, torch.zeros(concept.shape[0], k.shape[2] - text_len)], 1)
  return scores_from_probs(probs, v, weights, out_weight)


@pytest.mark.slow
@pytest.mark.parametrize("guidance", [True, False], ids=["dev", "schnell"])
def test_flux_scores_match_reference(guidance, tmp_path):
  from tests import flux_test
  model = flux_test.tiny_torch_model(guidance)
  model.save_pretrained(tmp_path)
  inputs = flux_test.random_inputs(model)
  concept = np.zeros((2, inputs["encoder_hidden_states"].shape[1]), np.float32)
  concept[:, 1:3] = 1
  # W_O of each block: the image output projection (double), the attention rows of proj_out (single).
  inner = model.config.num_attention_heads * model.config.attention_head_dim
  out_weights = ([b.attn.to_out[0].weight for b in model.transformer_blocks]
                 + [b.proj_out.weight[:, :inner] for b in model.single_transformer_blocks])
  captured = []
  hooks = [block.attn.register_forward_pre_hook(
      lambda m, args, kw: captured.append((m, kw["hidden_states"], kw.get("encoder_hidden_states"),
                                           kw["image_rotary_emb"])), with_kwargs=True)
           for block in list(model.transformer_blocks) + list(model.single_transformer_blocks)]
  flux_test.torch_forward(model, inputs)
  for h in hooks:
    h.remove()
  with torch.no_grad():
    expected = torch.stack([flux_reference_scores(*c, torch.from_numpy(concept), w)
                            for c, w in zip(captured, out_weights)], 1).numpy()

  module, params = loading.load(str(tmp_path), "flux")
  out, scores = module.apply({"params": params}, **inputs, concept=ConceptProbe(jnp.asarray(concept)))
  assert scores.shape == (2, model.config.num_layers + model.config.num_single_layers, 3)
  err = rel_error(with_and_without_wo(scores), expected)
  print(f"FLUX scores rel. error vs reference: {err:.2e}")
  assert err < 1e-4, err
  np.testing.assert_array_equal(np.asarray(out), np.asarray(module.apply({"params": params}, **inputs)))
