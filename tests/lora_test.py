"""LoRA on selected blocks: starts as the base model, trains only its factors, and exports weights
that PEFT loads into diffusers' own PixArtTransformer2DModel with the same output (f32, 1e-5)."""
import jax
import numpy as np
import peft
import pytest
import torch
from flax import traverse_util
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file

from dit_jax import lora, training
from dit_jax import loading
from tests.pixart_test import flax_forward, random_inputs, tiny_torch_model
from tests.testutil import rel_error

RANK, ALPHA = 2, 4.0


@pytest.mark.slow
def test_lora_trains_factors_only_and_loads_in_peft(tmp_path):
  model = tiny_torch_model(sample_size=8, use_additional_conditions=False)
  model.save_pretrained(tmp_path / "base")
  module, params = loading.load(str(tmp_path / "base"), "pixart")
  frozen = traverse_util.flatten_dict(params)
  factors = lora.init(frozen, training.block_selector([1]), RANK, seed=0)
  assert factors and all(p[0] == "transformer_blocks.1" and p[-2] in lora.TARGETS for p in factors)
  combine = lora.combiner(RANK, ALPHA)
  inputs = random_inputs(model)
  base_out = flax_forward(module, params, inputs)
  np.testing.assert_array_equal(flax_forward(module, combine(factors, frozen), inputs), base_out)

  # A few steps of LoRA training on a regression to a moved target: only factors change.
  target = base_out + 0.1
  def loss_fn(p, batch, key, aux):
    return ((flax_forward_jax(module, p, inputs) - target) ** 2).mean()
  optimizer = training.make_optimizer(1e-2, 1, 10)
  state = training.init_state(factors, optimizer, seed=0, ema=False)
  step = training.make_train_step(loss_fn, optimizer, frozen, combine=combine)
  losses = []
  for _ in range(5):
    state, loss = step(state, {})
    losses.append(float(loss))
  assert losses[-1] < losses[0]
  assert set(state.trainable) == set(factors)
  tuned = jax.device_get(state.trainable)
  assert any(np.abs(tuned[p]).max() > 0 for p in tuned if p[-1] == "lora_B")
  ours = flax_forward(module, combine(tuned, frozen), inputs)

  # PEFT layout -> diffusers' module with PEFT's LoRA layers.
  lora.export_peft(str(tmp_path / "lora"), tuned, RANK, ALPHA)
  config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA,
                           target_modules=sorted({".".join(p[:-1]) for p in tuned}))
  peft.inject_adapter_in_model(config, model)
  weights = load_file(str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
  state_dict = {k.removeprefix("transformer."): v for k, v in weights.items()}
  result = set_peft_model_state_dict(model, state_dict)
  assert not result.unexpected_keys, result.unexpected_keys
  from tests.pixart_test import torch_forward
  theirs = torch_forward(model, inputs)
  assert rel_error(ours, theirs) < 1e-5, rel_error(ours, theirs)
  assert rel_error(base_out, theirs) > 1e-3          # the LoRA did change the model


def flax_forward_jax(module, params, inputs):
  import jax.numpy as jnp
  from tests.testutil import nchw_to_nhwc
  return module.apply({"params": params}, jnp.asarray(nchw_to_nhwc(inputs["latents"])),
                      inputs["timestep"], inputs["caption"], inputs["caption_mask"])
