"""PixArt-alpha/Sigma: Flax port vs diffusers' own PixArtTransformer2DModel, through every checkpoint path."""
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import PixArtTransformer2DModel

from dit_jax import families
from dit_jax.models.interventions import TextSwap
from ports import checkpoints as common
from dit_jax.pipeline import loading
from tests.testutil import nchw_to_nhwc, rel_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny configs covering what published PixArt checkpoints vary: micro-conditions (alpha 1024-MS),
# none (alpha 512, Sigma), interpolation scale, learned-sigma output channels.
CONFIGS = {
    "alpha_ms": dict(sample_size=16, use_additional_conditions=True, interpolation_scale=2),
    "alpha_512": dict(sample_size=8, use_additional_conditions=False),
    "sigma": dict(sample_size=8, use_additional_conditions=False, interpolation_scale=0.5,
                  out_channels=4),
}


def tiny_torch_model(seed=0, **overrides):
  torch.manual_seed(seed)
  config = dict(num_attention_heads=2, attention_head_dim=24, in_channels=4, out_channels=8,
                num_layers=3, cross_attention_dim=48, patch_size=2, caption_channels=24,
                norm_type="ada_norm_single", norm_elementwise_affine=False, num_embeds_ada_norm=1000)
  config.update(overrides)
  model = PixArtTransformer2DModel(**config).eval()
  with torch.no_grad():  # random biases and tables too, so that a wrong mapping cannot hide
    for param in model.parameters():
      param.add_(0.05 * torch.randn_like(param))
  return model


def random_inputs(model, height=8, width=8, batch=2, seq=7, seed=1):
  rng = np.random.default_rng(seed)
  cfg = model.config
  mask = np.ones((batch, seq), np.float32)
  mask[1, seq - 3:] = 0  # padded caption on the second row
  inputs = dict(
      latents=rng.standard_normal((batch, cfg.in_channels, height, width)).astype(np.float32),
      timestep=np.array([999.0, 17.5][:batch], np.float32),
      caption=rng.standard_normal((batch, seq, cfg.caption_channels)).astype(np.float32),
      caption_mask=mask)
  if model.use_additional_conditions:
    inputs["resolution"] = np.tile(np.array([[height * 8, width * 8]], np.float32), (batch, 1))
    inputs["aspect_ratio"] = np.full((batch, 1), height / width, np.float32)
  return inputs


def torch_forward(model, inputs):
  t = {k: torch.from_numpy(v) for k, v in inputs.items()}
  added = {"resolution": t.get("resolution"), "aspect_ratio": t.get("aspect_ratio")}
  with torch.no_grad():
    out = model(t["latents"], encoder_hidden_states=t["caption"], timestep=t["timestep"],
                encoder_attention_mask=t["caption_mask"], added_cond_kwargs=added).sample
  return nchw_to_nhwc(out.float())


def flax_forward(module, params, inputs, **kwargs):
  return np.asarray(module.apply(
      {"params": params}, jnp.asarray(nchw_to_nhwc(inputs["latents"])), inputs["timestep"],
      inputs["caption"], inputs["caption_mask"], inputs.get("resolution"),
      inputs.get("aspect_ratio"), **kwargs), np.float32)


def write_original_checkpoint(model, path):
  """The original PixArt .pth layout, written from the published key names (fused qkv and kv)."""
  sd = {k: v.clone() for k, v in model.state_dict().items()}
  renames = [(r"^pos_embed\.proj\.", "x_embedder.proj."),
             (r"^adaln_single\.emb\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
             (r"^adaln_single\.emb\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
             (r"^adaln_single\.emb\.resolution_embedder\.linear_1\.", "csize_embedder.mlp.0."),
             (r"^adaln_single\.emb\.resolution_embedder\.linear_2\.", "csize_embedder.mlp.2."),
             (r"^adaln_single\.emb\.aspect_ratio_embedder\.linear_1\.", "ar_embedder.mlp.0."),
             (r"^adaln_single\.emb\.aspect_ratio_embedder\.linear_2\.", "ar_embedder.mlp.2."),
             (r"^adaln_single\.linear\.", "t_block.1."),
             (r"^caption_projection\.linear_1\.", "y_embedder.y_proj.fc1."),
             (r"^caption_projection\.linear_2\.", "y_embedder.y_proj.fc2."),
             (r"^proj_out\.", "final_layer.linear."),
             (r"^scale_shift_table$", "final_layer.scale_shift_table"),
             (r"^transformer_blocks\.", "blocks."),
             (r"\.attn1\.to_out\.0\.", ".attn.proj."),
             (r"\.attn2\.to_q\.", ".cross_attn.q_linear."),
             (r"\.attn2\.to_out\.0\.", ".cross_attn.proj."),
             (r"\.ff\.net\.0\.proj\.", ".mlp.fc1."),
             (r"\.ff\.net\.2\.", ".mlp.fc2.")]
  original = {}
  for key, value in sd.items():
    fused = re.match(r"transformer_blocks\.(\d+)\.(attn1|attn2)\.to_([qkv])\.(weight|bias)", key)
    if fused:
      block, attn, which, leaf = fused.groups()
      if attn == "attn1" and which == "q":
        parts = [sd[f"transformer_blocks.{block}.attn1.to_{c}.{leaf}"] for c in "qkv"]
        original[f"blocks.{block}.attn.qkv.{leaf}"] = torch.cat(parts)
      elif attn == "attn2" and which == "k":
        parts = [sd[f"transformer_blocks.{block}.attn2.to_{c}.{leaf}"] for c in "kv"]
        original[f"blocks.{block}.cross_attn.kv_linear.{leaf}"] = torch.cat(parts)
      if not (attn == "attn2" and which == "q"):
        continue
    for pattern, replacement in renames:
      key = re.sub(pattern, replacement, key)
    original[key] = value
  cfg = model.config
  grid = cfg.sample_size // cfg.patch_size
  hidden = cfg.num_attention_heads * cfg.attention_head_dim
  original["pos_embed"] = torch.zeros(1, grid * grid, hidden)        # a buffer in the original code
  original["y_embedder.y_embedding"] = torch.randn(5, cfg.caption_channels)  # learned null caption
  torch.save({"state_dict": original}, path)


def run_convert(*args):
  result = subprocess.run([sys.executable, "convert.py", *args], cwd=REPO,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  return result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_diffusers_folder_parity_float32(name, tmp_path):
  model = tiny_torch_model(**CONFIGS[name])
  model.save_pretrained(tmp_path / "pipe" / "transformer")
  for height, width in [(8, 8), (8, 12)]:  # the trained grid, and a non-square one
    inputs = random_inputs(model, height, width)
    module, params = loading.load(str(tmp_path / "pipe"), "pixart")  # converted on the fly
    err = rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs))
    assert err < 1e-5, (name, height, width, err)


@pytest.mark.slow
def test_sharded_folder_and_cli_to_flax(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_ms"])
  model.save_pretrained(tmp_path / "transformer", max_shard_size="60KB")
  assert (tmp_path / "transformer" / common.INDEX_NAME).exists()
  run_convert("--model", "pixart", "--src", str(tmp_path / "transformer"), "--dst", str(tmp_path / "flax"))
  module, params = loading.load(str(tmp_path / "flax"), "pixart")
  inputs = random_inputs(model)
  assert rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs)) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alpha_ms", "sigma"])
def test_original_pth_via_cli(name, tmp_path):
  model = tiny_torch_model(**CONFIGS[name])
  write_original_checkpoint(model, tmp_path / "PixArt.pth")
  overrides = ["--set", "num_attention_heads=2"]
  if name == "sigma":
    overrides += ["--set", "interpolation_scale=0.5", "--set", "out_channels=4"]
  else:
    overrides += ["--set", "interpolation_scale=2"]
  run_convert("--model", "pixart", "--src", str(tmp_path / "PixArt.pth"), "--dst",
              str(tmp_path / "flax"), *overrides)
  module, params = loading.load(str(tmp_path / "flax"), "pixart")
  inputs = random_inputs(model)
  assert rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs)) < 1e-5


@pytest.mark.slow
def test_bfloat16_within_2e_2(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_ms"])
  model.save_pretrained(tmp_path)
  module, params = loading.load(str(tmp_path), "pixart", dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree_util.tree_leaves(params))
  inputs = random_inputs(model)
  err = rel_error(flax_forward(module, params, inputs), torch_forward(model, inputs))
  assert err < 2e-2, err


@pytest.mark.slow
def test_round_trip_to_diffusers_folder(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_ms"])
  model.save_pretrained(tmp_path / "src")
  module, params = loading.load(str(tmp_path / "src"), "pixart")
  run_convert("--model", "pixart", "--src", str(tmp_path / "src"), "--dst", str(tmp_path / "flax"))
  run_convert("--model", "pixart", "--src", str(tmp_path / "flax"), "--dst", str(tmp_path / "back"),
              "--to", "diffusers")
  reloaded = PixArtTransformer2DModel.from_pretrained(tmp_path / "back").eval()
  inputs = random_inputs(model)
  np.testing.assert_array_equal(torch_forward(reloaded, inputs), torch_forward(model, inputs))


@pytest.mark.slow
def test_text_swap_intervention(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_512"])
  model.save_pretrained(tmp_path)
  module, params = loading.load(str(tmp_path), "pixart")
  inputs = random_inputs(model)
  other = random_inputs(model, seed=7)
  n = model.config.num_layers

  def swap(mask):
    return TextSwap(jnp.asarray(mask), other["caption"], other["caption_mask"])

  plain = flax_forward(module, params, inputs)
  np.testing.assert_array_equal(flax_forward(module, params, inputs, text_swap=swap([False] * n)), plain)
  all_swapped = flax_forward(module, params, inputs, text_swap=swap([True] * n))
  reference = flax_forward(module, params, {**inputs, "caption": other["caption"],
                                            "caption_mask": other["caption_mask"]})
  np.testing.assert_allclose(all_swapped, reference, rtol=0, atol=1e-6)
  one_block = flax_forward(module, params, inputs, text_swap=swap([False, True, False]))
  assert rel_error(one_block, plain) > 1e-3  # the swap changes the output

  # A sweep over block selections is one vmapped call.
  masks = jnp.eye(n, dtype=bool)
  sweep = jax.vmap(lambda m: module.apply(
      {"params": params}, jnp.asarray(nchw_to_nhwc(inputs["latents"])), inputs["timestep"],
      inputs["caption"], inputs["caption_mask"], text_swap=swap(m)))(masks)
  np.testing.assert_allclose(np.asarray(sweep[1]), one_block, rtol=0, atol=1e-5)


def test_checkpoint_errors_name_the_problem(tmp_path):
  model = tiny_torch_model(**CONFIGS["alpha_512"])
  config = dict(model.config)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  fam = families.get("pixart")

  missing = dict(state)
  del missing["transformer_blocks.1.attn2.to_k.weight"]
  with pytest.raises(common.CheckpointError, match=r"transformer_blocks\.1\.attn2\.to_k\.weight"):
    loading.from_state_dict(fam, config, missing)

  wrong = dict(state, **{"proj_out.weight": np.zeros((5, 48), np.float32)})
  with pytest.raises(common.CheckpointError, match=r"proj_out\.weight.*\(5, 48\).*\(32, 48\)"):
    loading.from_state_dict(fam, config, wrong)

  extra = dict(state, **{"transformer_blocks.9.attn1.to_q.weight": np.zeros((2, 2), np.float32)})
  with pytest.raises(common.CheckpointError, match=r"transformer_blocks\.9\.attn1\.to_q\.weight"):
    loading.from_state_dict(fam, config, extra)

  with pytest.raises(FileNotFoundError, match="PixArt-alpha/PixArt-XL-2-1024-MS"):
    loading.load(str(tmp_path / "nowhere"), "pixart")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="config.json"):
    loading.load(str(tmp_path / "empty"), "pixart")
