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

from dit_jax import checkpoints, families, loading
from dit_jax.families import sd3
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


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_diffusers_folder_parity_float32(layout, tmp_path):
  model = tiny_torch_model(layout)
  model.save_pretrained(tmp_path / "pipe" / "transformer")
  module, params = loading.load(str(tmp_path / "pipe"), "sd3")
  for height, width, text_len in [(8, 12, 7), (16, 6, 3)]:   # non-square; crops at both offsets
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
  config, lazy = sd3.from_original(checkpoints.read_state_dict(path), overrides)
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

  config, lazy = sd3.from_original(Recording(original), {})
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
