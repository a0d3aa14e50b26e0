"""SD3 / SD3.5: Flax port vs diffusers' SD3Transformer2DModel and StableDiffusion3Pipeline.

Tiny models in the three published layouts: SD3 (2B: no qk norm), SD3.5 Large (RMS-normed queries
and keys), SD3.5 Medium (qk norm and the extra attn2 self-attention in early blocks).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import SD3Transformer2DModel
from safetensors.torch import save_file

from ports import checkpoints
import convert
from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.diffusion.concepts import ConceptNotFound
from dit_jax.models.interventions import ConceptProbe
from dit_jax.families import sd3
from ports import sd3 as sd3_original
from tests.testutil import nchw_to_nhwc, rel_error

torch.set_grad_enabled(False)

LAYOUTS = {
    "sd3": dict(qk_norm=None, dual_attention_layers=()),
    "sd3.5-large": dict(qk_norm="rms_norm", dual_attention_layers=()),
    "sd3.5-medium": dict(qk_norm="rms_norm", dual_attention_layers=(0, 1)),
}


def tiny_torch_model(layout="sd3.5-medium", seed=0, **overrides):
  torch.manual_seed(seed)
  config = dict(sample_size=16, patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8,
                num_attention_heads=2, joint_attention_dim=24, caption_projection_dim=16,
                pooled_projection_dim=12, out_channels=4, pos_embed_max_size=8, **LAYOUTS[layout])
  config.update(overrides)
  model = SD3Transformer2DModel(**config).eval()
  for param in model.parameters():  # norm weights and biases too, so that a wrong mapping cannot hide
    param.add_(0.1 * torch.randn_like(param))
  # The stored position table too: the port must read it, not recompute it.
  model.pos_embed.pos_embed.add_(0.1 * torch.randn_like(model.pos_embed.pos_embed))
  return model


def random_inputs(model, height=8, width=12, batch=2, text_len=7, seed=1):
  """NCHW latents (diffusers' layout), text states, pooled vectors, timesteps (sigma * 1000)."""
  rng = np.random.default_rng(seed)
  cfg = model.config
  normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return dict(hidden_states=normal(batch, cfg.in_channels, height, width),
              encoder_hidden_states=normal(batch, text_len, cfg.joint_attention_dim),
              pooled_projections=normal(batch, cfg.pooled_projection_dim),
              timestep=np.array([900.0, 250.5][:batch], np.float32))


def torch_forward(model, inputs):
  return nchw_to_nhwc(model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).sample.numpy())


def flax_inputs(inputs):
  return dict(inputs, hidden_states=nchw_to_nhwc(inputs["hidden_states"]))


def flax_forward(module, params, inputs, **kwargs):
  return np.asarray(jax.jit(module.apply)({"params": params}, **flax_inputs(inputs), **kwargs), np.float32)


# Non-square latents: a 4x6 patch grid (cropped from the 8x8 table at offsets 2, 1), an 8x3 one
# (the full height, offset 2 across).
@pytest.mark.parametrize("layout,height,width,text_len", [
    ("sd3", 8, 12, 7), ("sd3.5-large", 8, 12, 7), ("sd3.5-medium", 8, 12, 7),
    ("sd3.5-medium", 16, 6, 3)])
def test_diffusers_folder_parity_float32(layout, height, width, text_len, tmp_path):
  model = tiny_torch_model(layout)
  model.save_pretrained(tmp_path / "pipe" / "transformer")
  module, params = loading.load(str(tmp_path / "pipe"), "sd3")
  inputs = random_inputs(model, height, width, text_len=text_len)
  err = rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs))
  print(f"{layout} {height}x{width} text {text_len}: rel error {err:.2e}")
  assert err < 1e-5, (layout, height, width, err)


def to_original_layout(state: dict, num_layers: int, prefix: str = "model.diffusion_model.") -> dict:
  """The published single-file layout, inverting diffusers' convert_sd3_transformer_checkpoint_to_diffusers."""
  swap = lambda t: torch.cat(t.chunk(2)[::-1])   # diffusers (scale, shift) <-> original (shift, scale)
  renames = [(r"^pos_embed\.pos_embed$", "pos_embed"), (r"^pos_embed\.proj\.", "x_embedder.proj."),
             (r"^time_text_embed\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
             (r"^time_text_embed\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
             (r"^time_text_embed\.text_embedder\.linear_1\.", "y_embedder.mlp.0."),
             (r"^time_text_embed\.text_embedder\.linear_2\.", "y_embedder.mlp.2."),
             (r"^proj_out\.", "final_layer.linear."), (r"^transformer_blocks\.", "joint_blocks."),
             (r"\.norm1\.linear\.", ".x_block.adaLN_modulation.1."),
             (r"\.norm1_context\.linear\.", ".context_block.adaLN_modulation.1."),
             (r"\.attn\.norm_q\.", ".x_block.attn.ln_q."), (r"\.attn\.norm_k\.", ".x_block.attn.ln_k."),
             (r"\.attn\.norm_added_q\.", ".context_block.attn.ln_q."),
             (r"\.attn\.norm_added_k\.", ".context_block.attn.ln_k."),
             (r"\.attn\.to_out\.0\.", ".x_block.attn.proj."), (r"\.attn\.to_add_out\.", ".context_block.attn.proj."),
             (r"\.attn2\.norm_q\.", ".x_block.attn2.ln_q."), (r"\.attn2\.norm_k\.", ".x_block.attn2.ln_k."),
             (r"\.attn2\.to_out\.0\.", ".x_block.attn2.proj."),
             (r"\.ff\.net\.0\.proj\.", ".x_block.mlp.fc1."), (r"\.ff\.net\.2\.", ".x_block.mlp.fc2."),
             (r"\.ff_context\.net\.0\.proj\.", ".context_block.mlp.fc1."),
             (r"\.ff_context\.net\.2\.", ".context_block.mlp.fc2.")]
  fused = {"attn": (["to_q", "to_k", "to_v"], "x_block.attn"),
           "attn_context": (["add_q_proj", "add_k_proj", "add_v_proj"], "context_block.attn"),
           "attn2": (["to_q", "to_k", "to_v"], "x_block.attn2")}
  original = {}
  for key, value in state.items():
    qkv = re.fullmatch(r"transformer_blocks\.(\d+)\.(attn2?)\.(to_[qkv]|add_[qkv]_proj)\.(weight|bias)", key)
    if qkv:
      i, attn, name, leaf = qkv.groups()
      which = "attn_context" if name.startswith("add") else attn
      names, target = fused[which]
      if name == names[0]:
        original[f"joint_blocks.{i}.{target}.qkv.{leaf}"] = torch.cat(
            [state[f"transformer_blocks.{i}.{attn}.{n}.{leaf}"] for n in names])
      continue
    if key.startswith("norm_out.linear."):
      original[f"final_layer.adaLN_modulation.1.{key.rpartition('.')[2]}"] = swap(value)
      continue
    if key.startswith(f"transformer_blocks.{num_layers - 1}.norm1_context.linear."):
      value = swap(value)   # the context_pre_only block's AdaLN-continuous
    for pattern, replacement in renames:
      key = re.sub(pattern, replacement, key)
    original[key] = value
  return {prefix + k: v.contiguous() for k, v in original.items()}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_original_single_file(layout, tmp_path):
  from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
  model = tiny_torch_model(layout)
  state = model.state_dict()
  original = to_original_layout(state, model.config.num_layers)
  # The test's inverse is right: diffusers' own converter takes it back to the diffusers state dict.
  back = convert_sd3_transformer_checkpoint_to_diffusers(dict(original))
  assert sorted(back) == sorted(state)
  assert all(torch.equal(back[k], state[k]) for k in state)
  # A full published file bundles other components (VAE, text encoders): they are skipped.
  original["first_stage_model.decoder.conv_in.weight"] = torch.zeros(2, 2)
  path = str(tmp_path / "sd3-tiny.safetensors")
  save_file(original, path)

  # The lazy diffusers-keyed view equals the diffusers state dict, key for key.
  # Without qk norm (SD3 2B) no tensor tells the head width; the published models' is 64.
  overrides = {"sample_size": 16, **({} if model.config.qk_norm else {"attention_head_dim": 8})}
  config, lazy = sd3_original.from_original(checkpoints.read_state_dict(path), overrides)
  assert sorted(lazy) == sorted(state)
  for key in state:
    np.testing.assert_array_equal(lazy[key], state[key].numpy(), err_msg=key)
  assert sd3.SD3Config.from_diffusers(config) == sd3.SD3Config.from_diffusers(dict(model.config))

  module, params = loading.load(path, "sd3", **overrides)
  inputs = random_inputs(model)
  err = rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs))
  print(f"{layout} original single file: rel error {err:.2e}")
  assert err < 1e-5, err


def test_original_fused_tensors_are_read_once():
  model = tiny_torch_model()
  original = {k: checkpoints.torch_to_numpy(v)
              for k, v in to_original_layout(model.state_dict(), model.config.num_layers).items()}
  reads = []

  class Recording(dict):
    def __getitem__(self, key):
      reads.append(key)
      return super().__getitem__(key)

  config, lazy = sd3_original.from_original(Recording(original), {})
  reads.clear()
  loading.from_state_dict(families.get("sd3"), config, lazy)
  assert sorted(reads) == sorted(original)   # every original tensor read exactly once
  assert not lazy._open                       # and nothing kept afterwards


def test_round_trip_to_diffusers_folder(tmp_path):
  model = tiny_torch_model()
  model.save_pretrained(tmp_path / "src")
  module, params = loading.load(str(tmp_path / "src"), "sd3")
  loading.export_diffusers(str(tmp_path / "back"), "sd3", module, params)
  reloaded = SD3Transformer2DModel.from_pretrained(tmp_path / "back").eval()
  same = lambda config: sd3.SD3Config.from_diffusers(dict(config))
  assert same(reloaded.config) == same(model.config)
  state, back = model.state_dict(), reloaded.state_dict()
  assert sorted(back) == sorted(state)
  assert all(torch.equal(back[k], state[k]) for k in state)
  inputs = random_inputs(model)
  np.testing.assert_array_equal(torch_forward(reloaded, inputs), torch_forward(model, inputs))
  # The original single file back to a diffusers folder, through the CLI: the same tensors.
  save_file(to_original_layout(state, model.config.num_layers), str(tmp_path / "sd3.safetensors"))
  assert convert.main(["--model", "sd3", "--src", str(tmp_path / "sd3.safetensors"), "--dst",
                       str(tmp_path / "from_original"), "--to", "diffusers", "--set", "sample_size=16"]) == 0
  from_original = SD3Transformer2DModel.from_pretrained(tmp_path / "from_original").state_dict()
  assert all(torch.equal(from_original[k], state[k]) for k in state) and len(from_original) == len(state)


# ---------------------------------------------------------------------------------------------
# Concept scores and the attention-input swap, against PyTorch references built on diffusers'
# attention processors (they share no code with dit_jax: only the weights are converted).


class Recording:
  """Wraps a block's JointAttnProcessor2_0; "score" computes the concept scores from the inputs it
  receives, "save" keeps its text input, "overwrite" replaces its text input by the saved one."""

  def __init__(self, inner, concept=None):
    self.inner, self.concept = inner, concept
    self.mode, self.saved, self.scores = None, None, None

  def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
    if self.mode == "save":
      self.saved = encoder_hidden_states.clone()
    elif self.mode == "overwrite":
      encoder_hidden_states = self.saved
    elif self.mode == "score":
      self.scores = reference_scores(attn, hidden_states, encoder_hidden_states, self.concept)
    return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask)


def reference_scores(attn, hidden, context, concept):
  """(B, 2) scores of one joint attention, written out: image-token queries, softmax over image and
  text keys (image first, as SD3 joins them), concept weights zero over the image keys."""
  from tests.scores_test import scores_from_probs
  heads = lambda x: x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)          # (B, N, T, H)
  norm = lambda layer, x: x if layer is None else layer(x)
  q = norm(attn.norm_q, heads(attn.to_q(hidden)))
  k = torch.cat([norm(attn.norm_k, heads(attn.to_k(hidden))),
                 norm(attn.norm_added_k, heads(attn.add_k_proj(context)))], 2)
  v = torch.cat([heads(attn.to_v(hidden)), heads(attn.add_v_proj(context))], 2)
  probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
  weights = torch.cat([torch.zeros(concept.shape[0], hidden.shape[1]), concept], 1)
  return scores_from_probs(probs, v, weights, attn.to_out[0].weight)


def with_processors(model, blocks, run, **kwargs):
  """run(wrappers) with Recording processors on the joint attention of `blocks`, restored after."""
  attns = [b.attn for b in model.transformer_blocks]
  originals = [a.processor for a in attns]
  wrappers = {i: Recording(originals[i], **kwargs) for i in blocks}
  try:
    for i, wrapper in wrappers.items():
      attns[i].set_processor(wrapper)
    return run(wrappers)
  finally:
    for attn, processor in zip(attns, originals):
      attn.set_processor(processor)


@pytest.mark.parametrize("layout", [pytest.param("sd3", marks=pytest.mark.slow),
                                    pytest.param("sd3.5-large", marks=pytest.mark.slow), "sd3.5-medium"])
def test_concept_scores_match_reference(layout):
  model = tiny_torch_model(layout)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, params = loading.from_state_dict(families.get("sd3"), dict(model.config), state)
  inputs = random_inputs(model)
  concept = np.zeros((2, inputs["encoder_hidden_states"].shape[1]), np.float32)
  concept[0, 1:3] = concept[1, 4] = 1

  def run(wrappers):
    for wrapper in wrappers.values():
      wrapper.mode = "score"
    torch_forward(model, inputs)
    return torch.stack([wrappers[i].scores for i in sorted(wrappers)], 1).numpy()

  from tests.scores_test import with_and_without_wo
  expected = with_processors(model, range(model.config.num_layers), run, concept=torch.from_numpy(concept))
  out, scores = jax.jit(module.apply)({"params": params}, **flax_inputs(inputs),
                                              concept=ConceptProbe(jnp.asarray(concept)))
  assert scores.shape == (2, model.config.num_layers, 3)
  err = rel_error(with_and_without_wo(scores), expected)
  print(f"{layout} concept scores: rel error vs diffusers processors {err:.2e}")
  assert err < 1e-4, err
  np.testing.assert_array_equal(np.asarray(out), flax_forward(module, params, inputs))   # unchanged


def paper_reference(model, main, other, blocks):
  """The main inputs' output with the selected blocks' joint attention reading the text input that
  `other` (same noise, another prompt) gives the same attention."""
  def run(wrappers):
    for wrapper in wrappers.values():
      wrapper.mode = "save"
    torch_forward(model, other)
    for wrapper in wrappers.values():
      wrapper.mode = "overwrite"
    return torch_forward(model, main)
  return with_processors(model, blocks, run)


@pytest.mark.slow   # ~10-25 s: a 4-block model, diffusers run twice per selection
def test_attention_swap_matches_the_papers_processors():
  from dit_jax.models.interventions import TextAttentionSwap
  model = tiny_torch_model("sd3.5-medium", num_layers=4)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  module, params = loading.from_state_dict(families.get("sd3"), dict(model.config), state)
  concept, neutral = random_inputs(model, seed=1), random_inputs(model, seed=2)
  neutral["hidden_states"], neutral["timestep"] = concept["hidden_states"], concept["timestep"]
  batch = {k: np.concatenate([concept[k], neutral[k]]) for k in concept}   # rows: concept, neutral
  source = jnp.asarray([2, 3, 2, 3], jnp.int32)
  jitted = jax.jit(module.apply)
  apply = lambda mask: jitted({"params": params}, **flax_inputs(batch), text_swap=TextAttentionSwap(mask, source))
  plain = flax_forward(module, params, batch)
  np.testing.assert_array_equal(np.asarray(apply(jnp.zeros(4, bool))), plain)   # nothing selected
  # A dual-attention block, a plain one, the context_pre_only last one, all of them.
  for blocks in [(1,), (2, 3), (0, 1, 2, 3)]:
    mask = jnp.asarray(np.isin(np.arange(4), blocks))
    swapped = np.asarray(apply(mask))
    err = rel_error(swapped[:2], paper_reference(model, concept, neutral, blocks))
    print(f"attention swap of blocks {blocks}: rel error vs diffusers processors {err:.2e}")
    assert err < 1e-5, (blocks, err)
    np.testing.assert_array_equal(swapped[2:], plain[2:])    # the neutral rows are untouched
    assert rel_error(swapped[:2], plain[:2]) > 1e-3
  # Every block swapped and the neutral pooled vector too: the concept rows are the neutral rows.
  same_pooled = dict(batch, pooled_projections=np.concatenate([neutral["pooled_projections"]] * 2))
  every = module.apply({"params": params}, **flax_inputs(same_pooled),
                       text_swap=TextAttentionSwap(jnp.ones(4, bool), source))
  np.testing.assert_allclose(np.asarray(every)[:2], plain[2:], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The pipeline: two tiny CLIPs with projections, a tiny T5, a tiny KL VAE, as save_pretrained
# writes them.

PROMPTS = ["a dog in the snow", "a red car in the style of van gogh"]
NEUTRAL = ["a person in the snow", "a red car"]
SIZE = (16, 24)   # pixels: 8x12 latents, a 4x6 patch grid (non-square)


def tiny_clip(hidden, seed):
  from transformers import CLIPTextConfig, CLIPTextModelWithProjection
  torch.manual_seed(seed)
  return CLIPTextModelWithProjection(CLIPTextConfig(
      vocab_size=32, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
      num_attention_heads=2, max_position_embeddings=77, projection_dim=6, pad_token_id=0,
      bos_token_id=0, eos_token_id=1)).eval()


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
  from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
  from tests.pipeline_test import tiny_kl_vae, tiny_t5, word_tokenizer
  folder = tmp_path_factory.mktemp("sd3_pipe")
  vae = tiny_kl_vae()
  vae.register_to_config(shift_factor=0.1, scaling_factor=0.5)
  # CLIP-L and CLIP-G states (8 + 12 channels) are zero-padded to T5's 24; pooled: 6 + 6 = 12.
  pipe = StableDiffusion3Pipeline(
      tokenizer=word_tokenizer(folder / "tok", 77), text_encoder=tiny_clip(8, 5),
      tokenizer_2=word_tokenizer(folder / "tok_2", 77), text_encoder_2=tiny_clip(12, 6),
      tokenizer_3=word_tokenizer(folder / "tok_3", 512), text_encoder_3=tiny_t5(),
      vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
      transformer=tiny_torch_model("sd3.5-medium"))
  pipe.save_pretrained(folder)
  return folder, pipe


@pytest.fixture(scope="module")
def sd3_pipe(sd3_folder):
  from dit_jax.pipeline.text2image import Text2Image
  folder, _ = sd3_folder
  return Text2Image("sd3", str(folder), num_steps=3, guidance_scale=5.0, max_sequence_length=12)


def test_pipeline_latents_match_diffusers(sd3_folder, sd3_pipe):
  _, pipe = sd3_folder
  height, width = SIZE
  noise = torch.randn(len(PROMPTS), 4, height // 2, width // 2, generator=torch.Generator().manual_seed(0))
  expected = pipe(PROMPTS, num_inference_steps=3, guidance_scale=5.0, height=height, width=width,
                  latents=noise.clone(), output_type="latent", max_sequence_length=12).images
  latents = sd3_pipe.latents(PROMPTS, [0, 1], height, width, noise=nchw_to_nhwc(noise.numpy()))
  err = rel_error(latents, nchw_to_nhwc(expected.numpy()))
  print(f"StableDiffusion3Pipeline final latents: rel error {err:.2e}")
  assert err < 1e-4, err


def test_prompts_and_concept_positions(sd3_folder, sd3_pipe):
  """The joint text is CLIP's 77 tokens then T5's 12: a concept is marked in both parts, at the
  positions of the ids the pipeline feeds each encoder."""
  _, pipe = sd3_folder
  encoder = sd3_pipe.encoder
  encoded = encoder(PROMPTS)
  caption, _, pooled, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                             max_sequence_length=12)
  np.testing.assert_array_equal(encoded["caption"], caption.numpy())
  np.testing.assert_array_equal(encoded["pooled"], pooled.numpy())
  assert encoded["caption"].shape == (2, 77 + 12, 24)
  mask = encoder.concept_mask(PROMPTS, ["dog", "van gogh"])
  ids = lambda tokenizer, length: tokenizer(PROMPTS, padding="max_length", max_length=length,
                                            truncation=True, return_tensors="np").input_ids
  fed = np.concatenate([ids(pipe.tokenizer, 77), ids(pipe.tokenizer_3, 12)], axis=1)
  vocab = pipe.tokenizer.get_vocab()
  np.testing.assert_array_equal(mask[0], fed[0] == vocab["dog"])
  np.testing.assert_array_equal(mask[1], np.isin(fed[1], [vocab["van"], vocab["gogh"]]))
  assert np.flatnonzero(mask[1]).tolist() == [7, 8, 77 + 7, 77 + 8]
  # T5 keeps 11 words + </s>: a concept cut from its part still counts in CLIP's; absent is an error.
  long = ["a dog in the snow in the style of van gogh a red car"]
  assert np.flatnonzero(encoder.concept_mask(long, ["red car"])[0]).tolist() == [12, 13]
  with pytest.raises(ConceptNotFound, match="'cat'"):
    encoder.concept_mask(PROMPTS[:1], ["cat"])


@pytest.mark.slow   # ~10-20 s: compiles two vmapped sweeps
def test_sweep_nothing_swapped_is_plain_sampling_and_every_block_is_the_neutral_prompt(sd3_pipe):
  """Both trajectories in one batch from the same noise, under CFG. Swapping every block's attention
  input gives exactly the neutral prompt's sample only with the neutral pooled vector too
  (swap_pooled): the pooled CLIP vectors modulate every block's image stream, so with the concept's
  kept the image stream still differs."""
  from dit_jax.diffusion import denoise
  from dit_jax.localize import sweep
  height, width = SIZE
  shape = sd3_pipe.latent_shape(height, width)
  noise = jnp.asarray(denoise.noise_for_seeds([0, 1], shape))
  cond = lambda prompts: jax.tree_util.tree_map(jnp.asarray, sd3_pipe.conditioning(prompts, height, width))
  plain = lambda prompts: np.asarray(sd3_pipe.denoise(noise, cond(prompts)))
  concept, neutral = plain(PROMPTS), plain(NEUTRAL)
  n = sd3_pipe.module.config.num_blocks
  masks = jnp.asarray([[False] * n, [False] * n, [True] * n])
  reverse = jnp.asarray([False, True, False])
  run = lambda **options: np.asarray(jax.jit(sweep.intervention_sweep(
      "sd3", sd3_pipe.loop(shape), **options))(sd3_pipe.params, noise, cond(PROMPTS), cond(NEUTRAL),
                                               masks, reverse))
  kept, swapped = run(), run(swap_pooled=True)
  errors = {"nothing swapped vs the prompt": rel_error(kept[0], concept),
            "reverse, nothing swapped vs the neutral prompt": rel_error(kept[1], neutral),
            "every block + pooled vs the neutral prompt": rel_error(swapped[2], neutral)}
  print({k: f"{e:.2e}" for k, e in errors.items()})   # one batch of both trajectories vs plain runs
  assert all(e < 1e-6 for e in errors.values()), errors
  np.testing.assert_array_equal(swapped[:2], kept[:2])        # K=0 never takes the pooled vector
  assert rel_error(kept[2], neutral) > 1e-3                   # the concept's pooled vector stays
  assert rel_error(kept[2], concept) > 1e-3


def test_scores_through_the_pipeline(sd3_pipe):
  from dit_jax.localize import sweep
  scores = sweep.concept_scores(sd3_pipe, PROMPTS, ["dog", "van gogh"], seeds=[0], size=SIZE)
  assert scores.shape == (2, 3, sd3_pipe.module.config.num_blocks, 3)   # rows, steps, blocks, VARIANTS
  assert np.all(scores > 0)


def test_options_and_errors(sd3_pipe):
  from dit_jax.localize import sweep
  with pytest.raises(ValueError, match="flux_swap is FLUX's option"):
    sweep.intervention_sweep("sd3", None, flux_swap="residual")
  with pytest.raises(checkpoints.CheckpointError, match="pass attention_head_dim"):
    sd3_original.from_original(to_original_layout(tiny_torch_model("sd3").state_dict(), 3), {})
  original = to_original_layout(tiny_torch_model().state_dict(), 3)
  original["model.diffusion_model.joint_blocks.0.x_block.attn.lora_up.weight"] = torch.zeros(2, 2)
  with pytest.raises(checkpoints.CheckpointError, match=r"joint_blocks\.0\.x_block\.attn\.lora_up"):
    sd3_original.from_original(original, {})
  with pytest.raises(FileNotFoundError, match="stable-diffusion-3.5"):
    loading.load("/nowhere", "sd3")
  with pytest.raises(ValueError, match="pos_embed_max_size=8"):
    sd3_pipe.latents(PROMPTS[:1], [0], 40, 16)
