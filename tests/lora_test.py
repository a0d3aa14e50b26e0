"""LoRA on selected blocks: starts as the base model, trains only its factors, and exports weights
that the public loaders, diffusers' pipe.load_lora_weights(folder) and PEFT's
PeftModel.from_pretrained(transformer, folder), load into diffusers' own transformers with the same
output (f32, 1e-5)."""
import copy
import inspect

import jax
import numpy as np
import peft
import pytest
from flax import traverse_util

from dit_jax import families
from dit_jax.train import lora, loop
from dit_jax.pipeline import loading
from dit_jax import blocks as blocks_lib
from tests.pixart_test import flax_forward, random_inputs, tiny_torch_model
from tests.testutil import rel_error
from tests.trainer_test import forward_case, tiny_transformer

RANK, ALPHA = 2, 4.0        # alpha != rank: a loader that ignores alpha / r is caught
# Blocks to adapt: FLUX's double block 1 and single block 0 (its fused single-block projections).
LORA_BLOCKS = {"pixart": [1], "sana": [1], "flux": [1, 2], "sd3": [0]}


def public_loads(family: str, base_model, folder) -> dict:
  """{loader: the diffusers transformer with the export in `folder` loaded by it}, for each public
  loader the family has: pipe.load_lora_weights (a pipeline of the family holding only the
  transformer; diffusers has none for PixArt) and PeftModel.from_pretrained. base_model() -> a
  fresh base transformer (each loader adapts its own)."""
  import diffusers
  loaded = {}
  pipeline_cls = getattr(diffusers, families.get(family).pipeline_class)
  if hasattr(pipeline_cls, "load_lora_weights"):
    required = [name for name, p in inspect.signature(pipeline_cls.__init__).parameters.items()
                if name not in ("self", "transformer") and p.default is inspect.Parameter.empty]
    pipe = pipeline_cls(transformer=base_model(), **dict.fromkeys(required))
    pipe.load_lora_weights(str(folder))
    loaded["load_lora_weights"] = pipe.transformer
  loaded["PeftModel.from_pretrained"] = peft.PeftModel.from_pretrained(base_model(), str(folder))
  return loaded


@pytest.mark.parametrize("family", sorted(LORA_BLOCKS))
def test_export_loads_through_diffusers_and_peft(family, tmp_path):
  """Factors of the family's LoRA targets, exported: each public loader gives our merged output."""
  model = tiny_transformer(family)
  fam = families.get(family)
  module, params = loading.from_state_dict(
      fam, dict(model.config), {k: v.numpy() for k, v in model.state_dict().items()})
  frozen = traverse_util.flatten_dict(params)
  selected = blocks_lib.parameter_selector(LORA_BLOCKS[family], module.config)
  factors = lora.init(frozen, selected, RANK, targets=fam.lora_targets)
  rng = np.random.default_rng(0)       # B nonzero: a trained adapter, not the identity
  factors = {p: 0.1 * rng.standard_normal(v.shape).astype(np.float32) for p, v in factors.items()}
  lora.export_peft(str(tmp_path / "lora"), factors, RANK, ALPHA)
  ours_fn, theirs_fn = forward_case(family, model)
  ours = ours_fn(module, lora.combiner(RANK, ALPHA)(factors, frozen))
  loaded = public_loads(family, lambda: copy.deepcopy(model), tmp_path / "lora")
  assert set(loaded) == ({"PeftModel.from_pretrained"} if family == "pixart" else
                         {"PeftModel.from_pretrained", "load_lora_weights"})
  for loader, adapted in loaded.items():
    err = rel_error(ours, theirs_fn(adapted))
    print(f"{family} LoRA through {loader}: rel error {err:.2e}")
    assert err < 1e-5, (loader, err)
  assert rel_error(ours, ours_fn(module, params)) > 1e-3          # the LoRA changes the model


@pytest.mark.slow
def test_lora_trains_factors_only_and_loads_in_peft(tmp_path):
  model = tiny_torch_model(sample_size=8, use_additional_conditions=False)
  model.save_pretrained(tmp_path / "base")
  module, params = loading.load(str(tmp_path / "base"), "pixart")
  frozen = traverse_util.flatten_dict(params)
  factors = lora.init(frozen, blocks_lib.parameter_selector([1]), RANK, seed=0)
  assert factors and all(p[0] == "transformer_blocks.1" and p[-2] in lora.TARGETS for p in factors)
  combine = lora.combiner(RANK, ALPHA)
  inputs = random_inputs(model)
  base_out = flax_forward(module, params, inputs)
  np.testing.assert_array_equal(flax_forward(module, combine(factors, frozen), inputs), base_out)

  # A few steps of LoRA training on a regression to a moved target: only factors change.
  target = base_out + 0.1
  def loss_fn(p, batch, key, aux):
    return ((flax_forward_jax(module, p, inputs) - target) ** 2).mean()
  optimizer = loop.make_optimizer(1e-2, 1, 10)
  state = loop.init_state(factors, optimizer, seed=0, ema=False)
  step = loop.make_train_step(loss_fn, optimizer, frozen, combine=combine)
  losses = []
  for _ in range(5):
    state, loss = step(state, {})
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  assert set(state.trainable) == set(factors)
  tuned = jax.device_get(state.trainable)
  assert any(np.abs(tuned[p]).max() > 0 for p in tuned if p[-1] == "lora_B")
  ours = flax_forward(module, combine(tuned, frozen), inputs)

  # The export, through PeftModel.from_pretrained (diffusers has no LoRA loader for PixArt).
  lora.export_peft(str(tmp_path / "lora"), tuned, RANK, ALPHA)
  from tests.pixart_test import torch_forward
  theirs = torch_forward(peft.PeftModel.from_pretrained(model, str(tmp_path / "lora")), inputs)
  assert rel_error(ours, theirs) < 1e-5, rel_error(ours, theirs)
  assert rel_error(base_out, theirs) > 1e-3          # the LoRA did change the model


def flax_forward_jax(module, params, inputs):
  import jax.numpy as jnp
  from tests.testutil import nchw_to_nhwc
  return module.apply({"params": params}, jnp.asarray(nchw_to_nhwc(inputs["latents"])),
                      inputs["timestep"], inputs["caption"], inputs["caption_mask"])
