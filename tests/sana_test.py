"""SANA parity: our Flax port against diffusers' own SanaTransformer2DModel, on tiny random models."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import SanaTransformer2DModel

from dit_jax.models.interventions import TextSwap
from dit_jax.models.sana import SanaConfig
from dit_jax.pipeline import loading
from ports import sana as sana_original
from tests.testutil import nchw_to_nhwc, rel_error

TINY = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
            num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16,
            caption_channels=12, mlp_ratio=2.5, sample_size=8, patch_size=1)
CONFIGS = {
    "base": {},
    "sprint": dict(qk_norm="rms_norm_across_heads", guidance_embeds=True, timestep_scale=1000.0),
    "positions": dict(interpolation_scale=1.0, patch_size=2, out_channels=8, attention_bias=True,
                      norm_elementwise_affine=True, cross_attention_head_dim=4,
                      num_cross_attention_heads=4),
}
LATENT_HW = (6, 10)   # non-square and not the trained sample_size, so positions are recomputed


def diffusers_model(overrides, seed=0) -> SanaTransformer2DModel:
  torch.manual_seed(seed)
  model = SanaTransformer2DModel(**{**TINY, **overrides}).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if param.ndim == 1 or "scale_shift_table" in name:   # norms, biases and tables start at 0/1
        param.add_(0.3 * torch.randn_like(param))
  return model


def random_inputs(config, batch=2, seed=1):
  rng = np.random.default_rng(seed)
  mask = np.ones((batch, 5), np.float32)
  mask[0, 3:] = 0   # padding in the first caption
  return dict(latents=rng.standard_normal((batch, *LATENT_HW, config["in_channels"]), np.float32),
              timestep=rng.uniform(0, 1000, batch).astype(np.float32),
              caption=rng.standard_normal((batch, 5, config["caption_channels"]), np.float32),
              caption_mask=mask,
              guidance=(rng.uniform(1, 8, batch).astype(np.float32) * 0.1
                        if config.get("guidance_embeds") else None))


def run_diffusers(model, inputs):
  as_torch = lambda a: None if a is None else torch.from_numpy(np.asarray(a))
  with torch.no_grad():
    out = model(as_torch(inputs["latents"]).permute(0, 3, 1, 2), as_torch(inputs["caption"]),
                as_torch(inputs["timestep"]), guidance=as_torch(inputs["guidance"]),
                encoder_attention_mask=as_torch(inputs["caption_mask"])).sample
  return nchw_to_nhwc(out.numpy())


def run_flax(module, params, inputs, **kwargs):
  out = module.apply({"params": params}, inputs["latents"], inputs["timestep"], inputs["caption"],
                     inputs["caption_mask"], inputs["guidance"], **kwargs)
  return out if isinstance(out, tuple) else np.asarray(out, np.float32)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request, tmp_path_factory):
  """(config, diffusers model, its folder, inputs, diffusers output) of one tiny configuration."""
  config = {**TINY, **CONFIGS[request.param]}
  model = diffusers_model(CONFIGS[request.param])
  path = tmp_path_factory.mktemp(request.param)
  model.save_pretrained(path)
  inputs = random_inputs(config)
  return config, model, str(path), inputs, run_diffusers(model, inputs)


@pytest.mark.slow
def test_float32_matches_diffusers(case):
  _, _, path, inputs, expected = case
  module, params = loading.load(path, "sana")
  error = rel_error(run_flax(module, params, inputs), expected)
  print(f"float32 relative error {error:.2e}")
  assert error < 1e-5


@pytest.mark.slow
def test_bfloat16_close_to_diffusers_float32(case):
  _, _, path, inputs, expected = case
  module, params = loading.load(path, "sana", dtype=jnp.bfloat16)
  error = rel_error(run_flax(module, params, inputs), expected)
  print(f"bfloat16 relative error {error:.2e}")
  assert error < 2e-2


def test_export_round_trip(case, tmp_path):
  _, _, path, inputs, expected = case
  module, params = loading.load(path, "sana")
  loading.export_diffusers(str(tmp_path), "sana", module, params)
  reloaded = SanaTransformer2DModel.from_pretrained(str(tmp_path)).eval()
  assert rel_error(run_diffusers(reloaded, inputs), expected) < 1e-6


# diffusers key -> original SANA key: the published conversion read backwards (fused q/k/v aside).
ORIGINAL_NAMES = [
    (r"patch_embed\.proj\.(\w+)", r"x_embedder.proj.\1"),
    (r"time_embed\.(?:emb\.)?timestep_embedder\.linear_1\.(\w+)", r"t_embedder.mlp.0.\1"),
    (r"time_embed\.(?:emb\.)?timestep_embedder\.linear_2\.(\w+)", r"t_embedder.mlp.2.\1"),
    (r"time_embed\.guidance_embedder\.linear_1\.(\w+)", r"cfg_embedder.mlp.0.\1"),
    (r"time_embed\.guidance_embedder\.linear_2\.(\w+)", r"cfg_embedder.mlp.2.\1"),
    (r"time_embed\.linear\.(\w+)", r"t_block.1.\1"),
    (r"caption_projection\.linear_(\d)\.(\w+)", r"y_embedder.y_proj.fc\1.\2"),
    (r"caption_norm\.weight", "attention_y_norm.weight"),
    (r"proj_out\.(\w+)", r"final_layer.linear.\1"),
    (r"scale_shift_table", "final_layer.scale_shift_table"),
    (r"transformer_blocks\.(\d+)\.scale_shift_table", r"blocks.\1.scale_shift_table"),
    (r"transformer_blocks\.(\d+)\.attn1\.to_out\.0\.(\w+)", r"blocks.\1.attn.proj.\2"),
    (r"transformer_blocks\.(\d+)\.attn1\.norm_(q|k)\.weight", r"blocks.\1.attn.\2_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.norm_(q|k)\.weight", r"blocks.\1.cross_attn.\2_norm.weight"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_q\.(\w+)", r"blocks.\1.cross_attn.q_linear.\2"),
    (r"transformer_blocks\.(\d+)\.attn2\.to_out\.0\.(\w+)", r"blocks.\1.cross_attn.proj.\2"),
    (r"transformer_blocks\.(\d+)\.ff\.conv_(inverted|depth|point)\.(\w+)",
     r"blocks.\1.mlp.\2_conv.conv.\3"),
]


def to_original_layout(model, sample_size) -> dict:
  """An original SANA state dict holding the weights of a diffusers model."""
  state = dict(model.state_dict())
  out = {"y_embedder.y_embedding": torch.randn(5, 12),   # buffers the loader must skip
         "pos_embed": torch.zeros(1, (sample_size // model.config.patch_size) ** 2, 16)}
  for i in range(model.config.num_layers):
    for leaf in ("weight", "bias"):
      fused = {"attn.qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
               "cross_attn.kv_linear": ("attn2.to_k", "attn2.to_v")}
      for original, parts in fused.items():
        if f"transformer_blocks.{i}.{parts[0]}.{leaf}" in state:   # attn1 may have no bias
          out[f"blocks.{i}.{original}.{leaf}"] = torch.cat(
              [state.pop(f"transformer_blocks.{i}.{part}.{leaf}") for part in parts])
  for key, value in state.items():
    renamed = [re.sub(rf"^{d}$", o, key) for d, o in ORIGINAL_NAMES if re.fullmatch(d, key)]
    assert len(renamed) == 1, (key, renamed)
    out[renamed[0]] = value.clone()
  return out


# The original layout has no affine norm2, so CONFIGS["positions"] minus that.
ORIGINAL_CASES = [CONFIGS["base"], CONFIGS["sprint"],
                  dict(interpolation_scale=1.0, patch_size=2, attention_bias=True)]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", ORIGINAL_CASES)
def test_original_checkpoint_matches_diffusers(overrides, tmp_path):
  config = {**TINY, **overrides}
  model = diffusers_model(overrides)
  inputs = random_inputs(config)
  path = str(tmp_path / "sana.pth")
  torch.save({"state_dict": to_original_layout(model, config["sample_size"])}, path)
  # What the tensors do not say, as a user passes it; a published size would need none of it.
  module, params = loading.load(path, "sana", attention_head_dim=8, num_cross_attention_heads=2,
                                **{k: overrides[k] for k in ("timestep_scale", "interpolation_scale")
                                   if k in overrides})
  inferred = module.config.to_diffusers()
  assert {k: inferred[k] for k in config} == config
  error = rel_error(run_flax(module, params, inputs), run_diffusers(model, inputs))
  print(f"original layout relative error {error:.2e}")
  assert error < 1e-5


@pytest.mark.slow
def test_text_swap(tmp_path):
  config = {**TINY, "num_layers": 3}
  model = diffusers_model({"num_layers": 3})
  model.save_pretrained(tmp_path)
  module, params = loading.load(str(tmp_path), "sana")
  inputs, other = random_inputs(config), random_inputs(config, seed=7)
  other["caption_mask"] = other["caption_mask"][::-1].copy()
  swap = lambda mask: TextSwap(jnp.asarray(mask), other["caption"], other["caption_mask"])

  @jax.jit
  def forward(caption, caption_mask, text_swap=None):
    return module.apply({"params": params}, inputs["latents"], inputs["timestep"], caption,
                        caption_mask, text_swap=text_swap)

  plain = forward(inputs["caption"], inputs["caption_mask"])
  unswapped = forward(inputs["caption"], inputs["caption_mask"], swap([False] * 3))
  np.testing.assert_array_equal(unswapped, plain)
  swapped_everywhere = forward(inputs["caption"], inputs["caption_mask"], swap([True] * 3))
  other_prompt = forward(other["caption"], other["caption_mask"])
  np.testing.assert_array_equal(swapped_everywhere, other_prompt)
  one_block = forward(inputs["caption"], inputs["caption_mask"], swap([False, True, False]))
  assert not np.allclose(one_block, plain) and not np.allclose(one_block, other_prompt)
  masks = jnp.array([[False] * 3, [True] * 3])
  sweep = jax.vmap(lambda m: forward(inputs["caption"], inputs["caption_mask"], swap(m)))(masks)
  np.testing.assert_allclose(sweep, np.stack([plain, other_prompt]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", [dict(dropout=0.1), dict(qk_norm="layer_norm"),
                                 dict(cross_attention_dim=32)])
def test_config_refuses_unsupported_values(bad):
  with pytest.raises(ValueError, match=next(iter(bad))):
    SanaConfig.from_diffusers({**TINY, **bad})


def test_original_config_of_a_published_size():
  """Sana_600M_1024px: what the published conversion script writes, read off the shapes alone."""
  hidden, layers = 1152, 28
  shapes = {"x_embedder.proj.weight": (hidden, 32, 1, 1), "final_layer.linear.weight": (32, hidden),
            "y_embedder.y_proj.fc1.weight": (hidden, 2304),
            **{f"blocks.{i}.mlp.inverted_conv.conv.weight": (5760, hidden, 1, 1) for i in range(layers)}}
  state = {k: np.broadcast_to(np.float32(0), shape) for k, shape in shapes.items()}
  config, _ = sana_original.from_original(state, {"sample_size": 32})
  assert config == dict(
      in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32,
      num_layers=layers, num_cross_attention_heads=16, cross_attention_head_dim=72,
      cross_attention_dim=hidden, caption_channels=2304, mlp_ratio=2.5, attention_bias=False,
      sample_size=32, patch_size=1, interpolation_scale=None, guidance_embeds=False, qk_norm=None)
