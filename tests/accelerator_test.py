"""GPU and TPU paths proven on a CPU (issue #18): no device, no weights, real model shapes.

1. Every attention call of PixArt-XL-2 1024px, SANA-1600M 1024px and FLUX.1-dev 1024px, traced as
   jax traces it on an NVIDIA GPU in bfloat16, reaches cuDNN's fused kernel with arguments that pass
   jax's own cuDNN checks (check_layout, check_is_flash_attention), the concept-scoring pass and
   the vmapped intervention sweep included.
2. What the cuDNN path does to the arguments (valid keys first, sequence lengths, its vmap and grad
   rules) gives the XLA result, run on the CPU through the XLA kernel.
3. The compiled programs (forward, sampling loop, intervention sweep, training step) lower for
   "cuda" (with the cuDNN kernel) and "tpu" (XLA) through jax.export, from abstract inputs.
"""
import functools
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo as cudnn

from dit_jax.models import layers
from dit_jax.diffusion import denoise, schedulers
from dit_jax.train import loop
from dit_jax.localize import sweep as sweep_lib
from dit_jax import families
from dit_jax.pipeline import loading
from dit_jax.families import flux as flux_family
from dit_jax.models.interventions import ConceptProbe
from dit_jax import blocks as blocks_lib

# What a CPU jaxlib lacks is the cuDNN library, and jax reads only its version number at trace time.
CUDNN_VERSION = 91000
LAYOUT = cudnn.AttentionLayout.BTNH
SD = jax.ShapeDtypeStruct
BF16 = jnp.bfloat16
# jax.export refuses custom calls without a stability guarantee unless told; cuDNN's are such.
CUDNN_TARGETS = ("__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward")
DISABLED = [jax.export.DisabledSafetyCheck.custom_call(t) for t in CUDNN_TARGETS]

# The published models at full width and token count, fewer blocks (cuDNN sees widths, not depth).
# PixArt and SANA run CFG (batch 2); FLUX.1-dev is guidance-distilled (batch 1).
REAL = {
    "pixart": dict(config=dict(num_layers=2), batch=2, latent=(128, 128, 4), text=(120, 4096)),
    "sana": dict(config=dict(num_layers=2), batch=2, latent=(32, 32, 32), text=(300, 2304)),
    "flux": dict(config=dict(num_layers=1, num_single_layers=1, guidance_embeds=True), batch=1,
                 latent=(128, 128, 16), text=(512, 4096)),
}
# Softmax-attention calls of one forward at these depths: PixArt self + cross per block; SANA cross
# only (its self-attention is linear); FLUX one joint attention per block.
FORWARD_CALLS = {"pixart": 4, "sana": 2, "flux": 2}
# With concept scores: one more call per scored attention (PixArt/SANA cross, FLUX joint).
SCORED_CALLS = {"pixart": 6, "sana": 4, "flux": 4}


@functools.lru_cache(maxsize=None)
def real_model(name: str):
  """(module, bf16 abstract params) of a published model's architecture; nothing is allocated."""
  fam = families.get(name)
  config = fam.config_cls(**REAL[name]["config"])
  params = jax.tree_util.tree_map(lambda p: SD(p.shape, BF16), loading.param_shapes(fam, config))
  return fam.module_cls(config=config, dtype=BF16), params


def forward_inputs(name: str) -> tuple:
  """Abstract positional inputs of the module's __call__ at the real sizes."""
  spec = REAL[name]
  b, (h, w, c), (s, d) = spec["batch"], spec["latent"], spec["text"]
  f32 = lambda *shape: SD(shape, jnp.float32)
  if name == "flux":
    tokens = (h // 2) * (w // 2)
    return (f32(b, tokens, 4 * c), f32(b, s, d), f32(b, 768), f32(b), f32(tokens, 3), f32(s, 3), f32(b))
  inputs = (f32(b, h, w, c), f32(b), f32(b, s, d), f32(b, s))
  return inputs + ((f32(b, 2), f32(b, 1)) if name == "pixart" else ())


def forward(module, name: str, concept: bool = False):
  """fn(params, *inputs): the module's forward; with `concept`, also the concept-scoring pass
  (every caption token a concept token: the shapes are what matters here)."""
  text_input = 1 if name == "flux" else 2

  def call(params, *inputs):
    weights = jnp.ones(inputs[text_input].shape[:2]) if concept else None
    return module.apply({"params": params}, *inputs,
                        concept=ConceptProbe(weights) if concept else None)
  return call


# ---------------------------------------------------------------------------------------------
# 1. jax's cuDNN checks on the arguments of every call.


def check_cudnn_arguments(query, key, value, bias, mask, q_lengths, kv_lengths):
  """jax's own checks, on what jax.nn.dot_product_attention(implementation="cudnn") hands cuDNN."""
  if q_lengths is not None or kv_lengths is not None:   # jax.nn fills in the missing one
    lengths = SD((query.shape[0],), jnp.int32)
    q_lengths, kv_lengths = q_lengths or lengths, kv_lengths or lengths
  combined = jax.eval_shape(lambda b, m: cudnn.combine_bias_and_mask(b, m, query.dtype), bias, mask)
  cudnn.check_layout(query, key, value, combined, q_lengths, kv_lengths, None, None, None, None, LAYOUT)
  for training_pass in (False, True):
    cudnn.check_is_flash_attention(query, key, value, LAYOUT.value, CUDNN_VERSION,
                                   combined is not None, training_pass)


@pytest.fixture
def gpu_calls(monkeypatch):
  """Trace as on an NVIDIA GPU; every attention call is recorded and its cuDNN arguments checked."""
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: CUDNN_VERSION)
  original, calls = jax.nn.dot_product_attention, []

  def spy(query, key, value, bias=None, mask=None, *, implementation=None, query_seq_lengths=None,
          key_value_seq_lengths=None, **kwargs):
    abstract = lambda x: None if x is None else SD(x.shape, x.dtype)
    args = [abstract(x) for x in (query, key, value, bias, mask, query_seq_lengths, key_value_seq_lengths)]
    calls.append({"implementation": implementation, "query": args[0], "key": args[1],
                  "kv_lengths": args[6]})
    if implementation == "cudnn":
      check_cudnn_arguments(*args)
    return original(query, key, value, bias, mask, implementation=implementation,
                    query_seq_lengths=query_seq_lengths, key_value_seq_lengths=key_value_seq_lengths,
                    **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  return calls


def assert_all_cudnn(calls, count: int):
  assert len(calls) == count, [c["query"] for c in calls]
  assert [c["implementation"] for c in calls] == ["cudnn"] * count


@pytest.mark.parametrize("name", sorted(REAL))
def test_every_attention_call_passes_jax_cudnn_checks_at_real_shapes(gpu_calls, name):
  module, params = real_model(name)
  gpu_calls.clear()    # tracing the parameter shapes ran attention too, in float32
  jax.eval_shape(forward(module, name, concept=True), params, *forward_inputs(name))
  assert_all_cudnn(gpu_calls, SCORED_CALLS[name])
  text_len = REAL[name]["text"][0]
  for call in gpu_calls:
    masked = call["key"].shape[1] == text_len and name != "flux"   # PixArt/SANA cross-attention
    assert (call["kv_lengths"] is not None) == masked
  heads = {"pixart": (16, 72), "sana": (20, 112), "flux": (24, 128)}[name]
  assert {c["query"].shape[2:] for c in gpu_calls} == {heads}


@pytest.mark.parametrize("name", sorted(REAL))
def test_the_vmapped_intervention_sweep_reaches_cudnn(gpu_calls, name):
  module, params = real_model(name)
  gpu_calls.clear()
  sweep, inputs = sweep_program(name, module, params)
  jax.eval_shape(sweep, *inputs)
  assert gpu_calls and all(c["implementation"] == "cudnn" for c in gpu_calls)
  # The kernel's batch is twice the prompts' (PixArt: the CFG halves; FLUX: the concept and the
  # neutral trajectories); the vmap rule folds the 2 interventions into it. (vmap of the scan also
  # traces its body once unmapped, to find which carries the interventions reach.)
  rows = 2 * REAL[name]["batch"]
  assert {c["query"].shape[0] for c in gpu_calls} <= {rows, 2 * rows}


# ---------------------------------------------------------------------------------------------
# 2. The cuDNN path's argument handling, run through the XLA kernel on the CPU.


def random_attention(batch=3, tokens=6, keys=5, heads=2, head_dim=8, seed=0):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal((batch, n, heads, head_dim)), jnp.float32)
             for n in (tokens, keys, keys))
  # A prefix mask (what tokenizers give), one with holes, and one with no valid key at all.
  valid = jnp.asarray([[1, 1, 1, 0, 0], [0, 1, 0, 1, 1], [0, 0, 0, 0, 0]], jnp.float32)[:batch]
  return q, k, v, layers.KeyMask(valid)


def cudnn_path_on_xla(q, k, v, mask):
  """Everything the cuDNN path does, with XLA's kernel in cuDNN's place."""
  k, v, lengths = layers.valid_keys_first(k, v, mask)
  return layers.fused_attention("xla")(q, k, v, lengths)


def test_the_cpu_path_is_xla_with_diffusers_bias():
  q, k, v, mask = random_attention()
  expected = jax.nn.dot_product_attention(q, k, v, bias=layers.mask_to_bias(mask.valid, q.dtype),
                                          implementation="xla")
  np.testing.assert_array_equal(layers.dot_product_attention(q, k, v, mask), expected)


@pytest.mark.parametrize("dtype,tolerance", [(jnp.float32, 1e-5), (BF16, 2e-2)])
def test_cudnn_argument_path_gives_the_xla_result(dtype, tolerance):
  q, k, v, mask = random_attention()
  ours, xla = (np.asarray(out, np.float32) for out in (
      jax.jit(cudnn_path_on_xla)(*(t.astype(dtype) for t in (q, k, v)), mask),
      layers.dot_product_attention(*(t.astype(dtype) for t in (q, k, v)), mask)))
  np.testing.assert_allclose(ours[:2], xla[:2], rtol=tolerance, atol=tolerance)
  if dtype != jnp.float32:
    return
  # No valid key: every key, as diffusers' uniform -10000 shift gives (up to the float32 rounding
  # of logits near -10000, which the sequence lengths do not have).
  np.testing.assert_allclose(ours[2], layers.dot_product_attention(q, k, v)[2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ours[2], xla[2], atol=1e-3)
  np.testing.assert_allclose(layers.fused_attention("xla")(q, k, v, None),
                             layers.dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)


def test_padded_keys_do_not_change_results():
  q, k, v, mask = random_attention(batch=2)
  padded = (mask.valid == 0)[:, :, None, None]
  noise = jax.random.normal(jax.random.key(1), k.shape) * 3
  k2, v2 = jnp.where(padded, noise, k), jnp.where(padded, -noise, v)
  for attend in (layers.dot_product_attention, cudnn_path_on_xla):
    attend = jax.jit(attend)
    np.testing.assert_allclose(attend(q, k2, v2, mask), attend(q, k, v, mask), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_the_cudnn_branch_gives_the_cpu_result_in_a_vmapped_sweep(monkeypatch):
  """A tiny PixArt's intervention sweep (padded captions, text swaps, vmap over block masks)
  through the cuDNN branch of dot_product_attention, XLA's kernel standing in for cuDNN's."""
  fam = families.get("pixart")
  config = fam.config_cls(num_attention_heads=2, attention_head_dim=8, num_layers=2,
                          cross_attention_dim=16, sample_size=8, caption_channels=12)
  module = fam.module_cls(config=config)
  params = module.init(jax.random.key(0), *fam.example_inputs(config))["params"]
  scheduler = schedulers.from_diffusers({"_class_name": "DPMSolverMultistepScheduler"}, 2)
  predict = families.get("pixart").predictor(module, 4.5)
  # A fresh function per run: jit would otherwise reuse the first run's trace.
  sweep = lambda: jax.jit(sweep_lib.intervention_sweep(
      "pixart", lambda p, x, c: denoise.denoise(predict, scheduler, p, x, c)))
  rng = np.random.default_rng(0)
  text = lambda: {"caption": rng.standard_normal((2, 7, 12)).astype(np.float32),
                  "caption_mask": np.array([[1] * 7, [1] * 4 + [0] * 3], np.float32)}
  cond = lambda: {**text(), **{"uncond_" + k: v for k, v in text().items()}}
  inputs = (params, rng.standard_normal((2, 8, 8, 4)).astype(np.float32), cond(), cond(),
            np.array([[True, False], [False, True]]), np.array([False, True]))
  expected = sweep()(*inputs)
  fused = layers.fused_attention
  monkeypatch.setattr(layers, "attention_implementation", lambda *args: "cudnn")
  monkeypatch.setattr(layers, "fused_attention", lambda implementation: fused("xla"))
  np.testing.assert_allclose(sweep()(*inputs), expected, rtol=1e-4, atol=1e-5)


def test_fused_attention_vmaps_with_shared_operands_and_differentiates():
  q, k, v, mask = random_attention(batch=2)
  qs = jnp.stack([q, 2 * q, -q])                  # mapped queries, shared keys (a sweep's block 0)
  _, _, lengths = layers.valid_keys_first(k, v, mask)
  attend = layers.fused_attention("xla")
  shared_keys = jax.jit(jax.vmap(attend, in_axes=(0, None, None, None)))
  mapped = shared_keys(qs, k, v, lengths)
  for i in range(3):
    np.testing.assert_allclose(mapped[i], attend(qs[i], k, v, lengths), rtol=1e-6, atol=1e-6)
  nested = jax.jit(jax.vmap(jax.vmap(attend, in_axes=(0, None, None, None)), in_axes=(None, 0, 0, None)))(
      qs, jnp.stack([k, k]), jnp.stack([v, v]), lengths)
  np.testing.assert_allclose(nested[1], mapped, rtol=1e-6, atol=1e-6)

  loss = lambda attention: lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v)))
  reference = loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths))
  ours = loss(lambda q, k, v: attend(q, k, v, lengths))
  grads = lambda loss: jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)
  for got, want in zip(grads(ours), grads(reference)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_rule_picks_cudnn_only_where_it_applies():
  shape, keys = (2, 4096, 16, 72), (2, 120, 16, 72)
  def pick(platform, dtype, q=shape, k=keys):
    with warnings.catch_warnings(), layers.attention_overrides(platform=platform):
      warnings.simplefilter("always")
      return layers.attention_implementation(q, k, dtype)

  assert pick("cuda", BF16) == pick("cuda", jnp.float16) == "cudnn"
  for platform, dtype in [("cuda", jnp.float32), ("cpu", BF16), ("tpu", BF16), ("rocm", BF16)]:
    assert pick(platform, dtype) == "xla", (platform, dtype)
  odd = (2, 4096, 16, 36)
  with pytest.warns(UserWarning, match="head_dim a multiple of 8"):
    assert pick("cuda", BF16, odd, odd) == "xla"                  # falls back, and says so


def test_forcing_cudnn_where_it_cannot_run_is_a_clear_error():
  odd = (2, 4096, 16, 36)
  with layers.attention_overrides(platform="cuda", implementation="cudnn"):
    with pytest.raises(ValueError, match=re.escape("head_dim a multiple of 8 and <= 128")) as error:
      layers.attention_implementation(odd, odd, BF16)
    assert "query (2, 4096, 16, 36)" in str(error.value) and "bfloat16" in str(error.value)
    with pytest.raises(ValueError, match="bfloat16 or float16 only"):
      layers.attention_implementation((1, 8, 2, 64), (1, 8, 2, 64), jnp.float32)
    big = (1, 8, 2, 256)   # Hopper takes 256; an unknown GPU is held to 128, as jax's check is
    with pytest.raises(ValueError, match="got 256"):
      layers.attention_implementation(big, big, BF16)
  assert layers.cudnn_unsupported(big, big, BF16, "cuda", (9, 0)) is None      # H100, H200
  assert "sm80" in layers.cudnn_unsupported(big, big, BF16, "cuda", (7, 5))     # T4: no flash kernel
  with layers.attention_overrides(platform="tpu", implementation="cudnn"):
    with pytest.raises(ValueError, match="NVIDIA GPUs"):
      layers.attention_implementation(big, big, BF16)


# ---------------------------------------------------------------------------------------------
# 3. Every compiled program lowers for cuda and tpu.


@pytest.fixture
def cudnn_library(monkeypatch):
  monkeypatch.setattr(cudnn, "check_cudnn_version", lambda: CUDNN_VERSION)


def lower(fn, inputs, platform: str) -> str:
  """StableHLO text of jit(fn) exported for `platform`, traced by the rule as it runs there."""
  with layers.attention_overrides(platform=platform):
    exported = jax.export.export(jax.jit(fn), platforms=(platform,),
                                 disabled_checks=DISABLED if platform == "cuda" else ())(*inputs)
  return exported.mlir_module()


def kernels(module_text: str) -> dict:
  return {t: module_text.count(f"custom_call @{t}(") for t in CUDNN_TARGETS}


def assert_kernels(text: str, platform: str, fwd: int, bwd: int = 0):
  """cuDNN forward and backward kernels in the program: on cuda one per call, on tpu none."""
  want = (fwd, bwd) if platform == "cuda" else (0, 0)
  assert tuple(kernels(text).values()) == want


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", sorted(REAL))
def test_forward_lowers(cudnn_library, name, platform):
  module, params = real_model(name)
  text = lower(forward(module, name), (params, *forward_inputs(name)), platform)
  assert_kernels(text, platform, FORWARD_CALLS[name])


def sampling_program(name, module, params):
  """(loop, inputs): the family's 20-step guided denoising loop at the real latent size."""
  spec = REAL[name]
  b, (s, d) = spec["batch"], spec["text"]
  if name == "flux":
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}
    kwargs = families.get("flux").schedule_kwargs(config, 20, spec["latent"])
    scheduler = schedulers.from_diffusers(config, 20, **kwargs)
    cond = {"caption": SD((b, s, d), jnp.float32), "pooled": SD((b, 768), jnp.float32)}
  else:
    config = {"_class_name": "DPMSolverMultistepScheduler"}
    if name == "sana":   # SANA's published solver: DPM-Solver++ on flow sigmas
      config.update(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    scheduler = schedulers.from_diffusers(config, 20)
    text = lambda: {"caption": SD((b, s, d), jnp.float32), "caption_mask": SD((b, s), jnp.float32)}
    cond = {**text(), **{"uncond_" + k: v for k, v in text().items()}}
    if name == "pixart":
      cond.update(resolution=SD((b, 2), jnp.float32), aspect_ratio=SD((b, 1), jnp.float32))
  predict = families.get(name).predictor(module, 4.5 if name != "flux" else 3.5)
  loop = lambda p, noise, c: denoise.denoise(predict, scheduler, p, noise, c)
  return loop, (params, SD((b, *spec["latent"]), jnp.float32), cond)


def sweep_program(name, module, params):
  """(sweep, inputs): localization's intervention sweep over 2 block selections."""
  loop, (params, noise, cond) = sampling_program(name, module, params)
  blocks = module.config.num_blocks
  sweep = sweep_lib.intervention_sweep(name, loop)
  return sweep, (params, noise, cond, cond, SD((2, blocks), jnp.bool_), SD((2,), jnp.bool_))


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", sorted(REAL))
def test_sampling_loop_and_sweep_lower(cudnn_library, name, platform):
  module, params = real_model(name)
  loop, inputs = sampling_program(name, module, params)
  assert_kernels(lower(loop, inputs, platform), platform, FORWARD_CALLS[name])
  sweep, inputs = sweep_program(name, module, params)
  assert_kernels(lower(sweep, inputs, platform), platform, FORWARD_CALLS[name])


def train_program(name: str, module, params):
  """(step, inputs): the jitted training step of make_train_step, the last block trainable."""
  trainable, frozen = loop.split_params(params, blocks_lib.parameter_selector([1], module.config))
  optimizer = loop.make_optimizer(1e-5, 1, 100)
  state = jax.eval_shape(lambda t: loop.init_state(t, optimizer, 0, ema=True), trainable)
  inputs = forward_inputs(name)
  if name == "flux":     # the image enters as packed tokens, timesteps in [0, 1]
    b, tokens, channels = inputs[0].shape
    batch = {"images": SD((b, 64, 64, channels), jnp.float32), "text": inputs[1:3]}
    ids = flux_family.latent_image_ids(64, 64), np.zeros((inputs[1].shape[1], 3), np.float32)
    apply = lambda p, x, t, batch: module.apply(
        {"params": p}, x.reshape(b, tokens, channels), *batch["text"], t / 1000, *ids,
        jnp.full((b,), 3.5)).reshape(x.shape)
  else:
    batch = {"images": inputs[0], "text": inputs[2:]}
    apply = lambda p, x, t, batch: module.apply({"params": p}, x, t, *batch["text"])
  alphas = jnp.linspace(0.999, 0.01, 1000)
  loss = lambda p, batch, key, aux: loop.diffusion_loss(apply, p, batch, key, alphas)
  step = loop.make_train_step(loss, optimizer, frozen, ema_decay=0.999)
  return step._compiled, (state, frozen, None, batch)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("name", sorted(REAL))
def test_training_step_lowers(cudnn_library, name, platform):
  """Fine-tuning the last block: forward and that block's backward on cuDNN."""
  module, params = real_model(name)
  step, inputs = train_program(name, module, params)
  backward = FORWARD_CALLS[name] // 2     # the last of the two blocks
  assert_kernels(lower(step, inputs, platform), platform, FORWARD_CALLS[name], backward)
