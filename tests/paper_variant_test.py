"""score_variant "paper" against an independent reference: PyTorch hooks on diffusers' own attention
modules that compute the attention contribution the way the paper's public code does
(github ArmanZarei/DiT-Knowledge-Localization, commit 6ddd472; docs/design.md, "The method"):

- PixArt, SANA: attention_processor.py, CachingAttnProcessor keeps the cross-attention's
  probabilities (attn.get_attention_scores, with the prepared key mask) and values;
  calc_attn_cont_varients.py, calc_attn_cont_using_m_mult_v_mult_o_per_block_and_t_fn takes the
  concept's columns and values and applies attn.to_out[0], a Linear with its bias.
- FLUX: attention_processor.py, FluxAttnContCalculatorProcessor.calc_attn_cont: image-token queries
  against text keys of the softmax over every key, and attn.to_out[0] (with its bias) only
  `if attn.to_out`: the single blocks' attention has none (pre_only), so no W_O there.
- SD3 (not in the paper): to_out[0] with its bias on the joint blocks, as FLUX's double blocks.

The references index the concept's token positions, as the paper's code does, and share no code
with dit_jax; only the weights are converted.
"""
import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dit_jax import families, blocks
from dit_jax.pipeline import loading
from dit_jax.localize import localizers
from dit_jax.report import figures
from dit_jax.models.interventions import ConceptProbe
from dit_jax.localize.localizers import common
from dit_jax.models.variants import VARIANTS, variant_index
from dit_jax.localize.records import ScoreRecord
from tests.testutil import nchw_to_nhwc, rel_error

TOKENS = [1, 2]   # the concept's token positions in every row


def variant(scores: np.ndarray, name: str) -> np.ndarray:
  """The `name` scores of a model's (..., VARIANTS) score array."""
  return scores[..., variant_index(name)]


def concept_weights(batch: int, text_len: int) -> np.ndarray:
  weights = np.zeros((batch, text_len), np.float32)
  weights[:, TOKENS] = 1
  return weights


def argument(args, kwargs, name):
  return kwargs[name] if name in kwargs else args[0]


def record_scores(modules, score):
  """Forward hooks that append score(module, args, kwargs) per call, in module order; returns the
  list and a function removing the hooks."""
  found = []
  hooks = [m.register_forward_hook(lambda m, a, kw, out: found.append(score(m, a, kw)),
                                   with_kwargs=True) for m in modules]
  return found, lambda: [h.remove() for h in hooks]


def paper_cross_attention_score(attn, args, kwargs):
  """(B,) CachingAttnProcessor + calc_attn_cont_using_m_mult_v_mult_o_per_block_and_t_fn."""
  hidden = argument(args, kwargs, "hidden_states")
  context, mask = kwargs["encoder_hidden_states"], kwargs["attention_mask"]
  batch, length = context.shape[:2]
  mask = attn.prepare_attention_mask(mask, length, batch)
  query = attn.head_to_batch_dim(attn.to_q(hidden))
  key = attn.head_to_batch_dim(attn.to_k(context))
  value = attn.head_to_batch_dim(attn.to_v(context))
  probs = attn.get_attention_scores(query, key, mask)
  m, v = probs[:, :, TOKENS], value[:, TOKENS, :]
  return attn.to_out[0](attn.batch_to_head_dim(m @ v)).norm(dim=-1).mean(dim=1)


def paper_flux_score(text_len, attn, args, kwargs):
  """(B,) FluxAttnContCalculatorProcessor: the joint attention (text first, RoPE), then
  calc_attn_cont on each batch row (the paper's code reads row 0 of a batch of one); text_len is
  its max_text_tokens_len, the T5 length."""
  from diffusers.models.embeddings import apply_rotary_emb
  hidden, context = kwargs["hidden_states"], kwargs.get("encoder_hidden_states")
  batch = hidden.shape[0]
  heads = lambda x: x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
  query, key = attn.norm_q(heads(attn.to_q(hidden))), attn.norm_k(heads(attn.to_k(hidden)))
  value = heads(attn.to_v(hidden))
  if context is not None:   # double block: the text's own projections, joined in front (single
                            # blocks get text ++ image as one sequence)
    query = torch.cat([attn.norm_added_q(heads(attn.add_q_proj(context))), query], 2)
    key = torch.cat([attn.norm_added_k(heads(attn.add_k_proj(context))), key], 2)
    value = torch.cat([heads(attn.add_v_proj(context)), value], 2)
  rope = kwargs["image_rotary_emb"]
  query, key = apply_rotary_emb(query, rope), apply_rotary_emb(key, rope)
  probs = torch.softmax(query @ key.transpose(-2, -1) / query.size(-1) ** 0.5, dim=-1)
  # diffusers' Attention of the paper's time sets to_out = None where pre_only; FluxAttention
  # (diffusers >= 0.35) leaves it unset.
  to_out = getattr(attn, "to_out", None)
  scores = []
  for row in range(batch):
    m = probs[row, :, text_len:, :text_len][:, :, TOKENS]    # (heads, image tokens, |J|)
    v = value[row, :, :text_len][:, TOKENS, :]               # (heads, |J|, head_dim)
    o = (m @ v).transpose(0, 1).reshape(m.shape[1], v.shape[0] * v.shape[2])
    if to_out:
      o = to_out[0](o)
    scores.append(torch.norm(o, dim=1).mean())
  return torch.stack(scores)


def paper_sd3_score(attn, args, kwargs):
  """(B,) SD3's joint attention (image first, then text): to_out[0] with its bias, by analogy."""
  hidden, context = kwargs["hidden_states"], kwargs["encoder_hidden_states"]
  batch, image_len = hidden.shape[:2]
  heads = lambda x: x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
  norm = lambda layer, x: x if layer is None else layer(x)
  query = norm(attn.norm_q, heads(attn.to_q(hidden)))
  key = torch.cat([norm(attn.norm_k, heads(attn.to_k(hidden))),
                   norm(attn.norm_added_k, heads(attn.add_k_proj(context)))], 2)
  value = torch.cat([heads(attn.to_v(hidden)), heads(attn.add_v_proj(context))], 2)
  probs = torch.softmax(query @ key.transpose(-2, -1) / query.size(-1) ** 0.5, dim=-1)
  text = [image_len + t for t in TOKENS]
  o = (probs[:, :, :, text] @ value[:, :, text]).transpose(1, 2).reshape(batch, image_len, -1)
  return attn.to_out[0](o).norm(dim=-1).mean(dim=1)


def zero_bias(params: dict, path: tuple[str, ...]) -> dict:
  """A copy of `params` with the bias of the Dense at `path` zeroed."""
  out = dict(params)
  node = out
  for name in path[:-1]:
    node[name] = dict(node[name])
    node = node[name]
  node[path[-1]] = dict(node[path[-1]], bias=jnp.zeros_like(node[path[-1]]["bias"]))
  return out


# ------------------------------------------------------------------------------ cross-attention

def converted(family, model):
  """Our module and params from a diffusers model's own state dict."""
  return loading.from_state_dict(families.get(family), dict(model.config),
                                 {k: v.numpy() for k, v in model.state_dict().items()})


def scored(modules, reference, forward, family, model, call):
  """The paper's scores recorded by hooks on `modules` during diffusers' `forward`, our params,
  and apply(params) -> our scores; call(run, params) runs our jitted module with a concept probe."""
  found, remove = record_scores(modules, reference)
  forward()
  remove()
  module, params = converted(family, model)
  run = jax.jit(module.apply)
  return torch.stack(found, 1).numpy(), params, lambda p: np.asarray(call(run, p)[1])


def cross_attention_case(family, model, forward, caption_mask, call):
  weights = jnp.asarray(concept_weights(*caption_mask.shape))
  expected, params, apply = scored(
      [b.attn2 for b in model.transformer_blocks], paper_cross_attention_score, forward, family,
      model, lambda run, p: call(run, p, ConceptProbe(weights)))
  return expected, params, apply, "transformer_blocks.{}", "attn2"


def pixart_case():
  from tests import pixart_test
  model = pixart_test.tiny_torch_model(**pixart_test.CONFIGS["alpha_512"])
  inputs = pixart_test.random_inputs(model)
  return cross_attention_case(
      "pixart", model, lambda: pixart_test.torch_forward(model, inputs), inputs["caption_mask"],
      lambda run, p, concept: run({"params": p}, jnp.asarray(nchw_to_nhwc(inputs["latents"])),
                                  inputs["timestep"], inputs["caption"], inputs["caption_mask"],
                                  concept=concept))


def sana_case():
  from tests import sana_test
  model = sana_test.diffusers_model({})
  inputs = sana_test.random_inputs(sana_test.TINY)
  return cross_attention_case(
      "sana", model, lambda: sana_test.run_diffusers(model, inputs), inputs["caption_mask"],
      lambda run, p, concept: run({"params": p}, inputs["latents"], inputs["timestep"],
                                  inputs["caption"], inputs["caption_mask"], concept=concept))


@pytest.mark.parametrize("case", [pytest.param(pixart_case, marks=pytest.mark.slow), sana_case],
                         ids=["pixart", "sana"])
def test_cross_attention_paper_score_matches_the_papers_computation(case):
  expected, params, apply, block, attn = case()
  scores = apply(params)
  assert scores.shape == (*expected.shape, len(VARIANTS))
  err = rel_error(variant(scores, "paper"), expected)
  print(f"paper score rel. error vs the paper's computation: {err:.2e}")
  assert err < 1e-5, err
  # The bias is what sets it apart from with_wo: every block's differs, and with the biases
  # zeroed the two agree.
  paper, with_wo = variant(scores, "paper"), variant(scores, "with_wo")
  assert np.all(np.abs(paper - with_wo) > 1e-3 * with_wo)
  unbiased = params
  for i in range(expected.shape[1]):
    unbiased = zero_bias(unbiased, (block.format(i), attn, "to_out.0"))
  zeroed = apply(unbiased)
  np.testing.assert_allclose(variant(zeroed, "paper"), variant(zeroed, "with_wo"), rtol=1e-6)


# ---------------------------------------------------------------------------------------- FLUX

@pytest.fixture(scope="module")
def flux():
  from tests import flux_test
  model = flux_test.tiny_torch_model(guidance_embeds=True)
  inputs = flux_test.random_inputs(model)
  text_len = inputs["encoder_hidden_states"].shape[1]
  blocks = list(model.transformer_blocks) + list(model.single_transformer_blocks)
  concept = ConceptProbe(jnp.asarray(concept_weights(2, text_len)))
  expected, params, apply = scored(
      [b.attn for b in blocks], functools.partial(paper_flux_score, text_len),
      lambda: flux_test.torch_forward(model, inputs), "flux", model,
      lambda run, p: run({"params": p}, **inputs, concept=concept))
  return expected, params, apply, model.config.num_layers


def test_flux_paper_score_matches_the_papers_computation(flux):
  expected, params, apply, double = flux
  scores = apply(params)
  assert scores.shape == (*expected.shape, len(VARIANTS))
  err = rel_error(variant(scores, "paper"), expected)
  print(f"FLUX paper score rel. error vs the paper's computation: {err:.2e}")
  assert err < 1e-5, err


def test_flux_paper_score_is_biased_w_o_in_double_blocks_and_none_in_single_blocks(flux):
  _, params, apply, double = flux
  scores = apply(params)
  paper, with_wo, without_wo = (variant(scores, v) for v in ("paper", "with_wo", "without_wo"))
  assert np.all(np.abs(paper[:, :double] - with_wo[:, :double]) > 1e-3 * with_wo[:, :double])
  np.testing.assert_array_equal(paper[:, double:], without_wo[:, double:])
  assert rel_error(with_wo[:, double:], without_wo[:, double:]) > 1e-2   # proj_out's rows do act
  unbiased = params
  for i in range(double):
    unbiased = zero_bias(unbiased, (f"transformer_blocks.{i}", "attn", "to_out.0"))
  zeroed = apply(unbiased)
  np.testing.assert_allclose(variant(zeroed, "paper")[:, :double], variant(zeroed, "with_wo")[:, :double],
                             rtol=1e-6)


# ----------------------------------------------------------------------------------------- SD3

@pytest.mark.slow
def test_sd3_paper_score_is_w_o_with_its_bias():
  from tests import sd3_test
  model = sd3_test.tiny_torch_model("sd3.5-medium")
  inputs = sd3_test.random_inputs(model)
  found, remove = record_scores([b.attn for b in model.transformer_blocks], paper_sd3_score)
  sd3_test.torch_forward(model, inputs)
  remove()
  module, params = converted("sd3", model)
  weights = concept_weights(2, inputs["encoder_hidden_states"].shape[1])
  _, scores = jax.jit(module.apply)({"params": params}, **sd3_test.flax_inputs(inputs),
                                    concept=ConceptProbe(jnp.asarray(weights)))
  scores = np.asarray(scores)
  assert rel_error(variant(scores, "paper"), torch.stack(found, 1).numpy()) < 1e-5
  paper, with_wo = variant(scores, "paper"), variant(scores, "with_wo")
  assert np.all(np.abs(paper - with_wo) > 1e-3 * with_wo)


# ------------------------------------------------------------------- records, readers, configs

OLD = {"category": "animal", "with_wo": [1.0, 3.0, 2.0], "without_wo": [0.5, 0.1, 0.9],
       "per_step_with_wo": [[1.0, 3.0, 2.0]], "num_prompts": 1, "num_seeds": 1, "num_steps": 1,
       "localizer": "attention", "presence": [], "baseline": None, "image_change": []}


def test_records_without_paper_still_read_and_refuse_it_clearly(tmp_path):
  record = ScoreRecord.from_dict(OLD)
  np.testing.assert_array_equal(record.scores("without_wo"), OLD["without_wo"])
  with pytest.raises(ValueError, match="no 'paper' scores.*written before"):
    record.scores("paper")
  assert set(localizers.named_scores("attention", OLD)) == {"attention:with_wo", "attention:without_wo"}
  path = tmp_path / "scores.json"
  path.write_text(json.dumps({"a dog": OLD}))
  assert blocks.top_blocks_from_scores(str(path), "a dog", 1, "without_wo") == [2]
  with pytest.raises(ValueError, match="no 'paper' scores"):
    blocks.top_blocks_from_scores(str(path), "a dog", 1, "paper")
  with pytest.raises(ValueError, match="no 'paper' scores"):
    figures.heatmap({"a dog": OLD}, str(tmp_path / "heat.png"), variant="paper")
  figures.write_scores({"a dog": OLD}, str(tmp_path))
  header, first = (tmp_path / "scores.csv").read_text().splitlines()[:2]
  assert header.split(",")[4:] == [*VARIANTS, *(f"rank_{v}" for v in VARIANTS)]
  assert first.split(",")[4:] == ["1.0", "0.5", "", "3", "2", ""]


def test_records_with_paper_rank_by_it(tmp_path):
  new = dict(OLD, paper=[3.0, 1.0, 2.0])
  assert ScoreRecord.from_dict(new).scores("paper").tolist() == new["paper"]
  assert localizers.named_scores("attention", new)["attention:paper"] == new["paper"]
  path = tmp_path / "scores.json"
  path.write_text(json.dumps({"a dog": new}))
  assert blocks.top_blocks_from_scores(str(path), "a dog", 1, "paper") == [0]
  figures.heatmap({"a dog": new}, str(tmp_path / "heat.png"), variant="paper", k=1)
  assert (tmp_path / "heat.png").stat().st_size > 0


def test_single_score_localizers_give_their_score_under_every_variant():
  pairs = [types.SimpleNamespace(category="animal")]
  made = common.record("causal", pairs, [0], types.SimpleNamespace(num_steps=2), [0.1, 0.4],
                       [0.5, 0.2], 0.6)
  for name in ("with_wo", "without_wo", "paper"):
    assert made.scores(name).tolist() == [0.1, 0.4]


def test_flux_config_follows_the_papers_code():
  from configs import flux, pixart
  config = flux.get_config().sweep
  assert config.pooled_swap and config.score_variant == "paper"
  assert "swap_pooled" in families.get("flux").intervention_options   # the sweep option it sets
  assert not pixart.get_config().sweep.pooled_swap and pixart.get_config().sweep.score_variant == "with_wo"
