"""JAX schedulers vs diffusers' own, step by step, from the same noise and the same fake model."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import diffusers

from dit_jax.diffusion import schedulers
from dit_jax.shapes.model import SCHEDULER_CONFIG as SHAPES_SCHEDULER
from tests.testutil import rel_error

PIXART_DPM = {  # PixArt-alpha/Sigma scheduler_config.json
    "_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
    "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "euler_at_final": False,
    "lambda_min_clipped": -float("inf"), "lower_order_final": True, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "solver_order": 2, "solver_type": "midpoint", "steps_offset": 0,
    "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
    "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None}
SANA_DPM = dict(PIXART_DPM, use_flow_sigmas=True, flow_shift=3.0, prediction_type="flow_prediction",
                final_sigmas_type="zero")
FLUX_DEV = {"_class_name": "FlowMatchEulerDiscreteScheduler", "base_image_seq_len": 256,
            "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
            "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True}
FLUX_SCHNELL = dict(FLUX_DEV, shift=1.0, use_dynamic_shifting=False)
DDIM_EPS = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False,
            "steps_offset": 1, "prediction_type": "epsilon"}


def flux_sigmas(n):  # what the FLUX pipelines pass as sigmas=
  return np.linspace(1.0, 1 / n, n)


# (name, config, set_timesteps kwargs as a function of the step count)
CASES = [
    ("pixart", PIXART_DPM, lambda n: {}),
    ("sana", SANA_DPM, lambda n: {}),
    ("sana_mu", dict(SANA_DPM, use_dynamic_shifting=True), lambda n: {"mu": 0.8}),
    ("dpm_heun_v_sigma_min", dict(PIXART_DPM, solver_type="heun", prediction_type="v_prediction",
                                  final_sigmas_type="sigma_min", beta_schedule="scaled_linear",
                                  beta_start=0.00085, beta_end=0.012, timestep_spacing="leading",
                                  steps_offset=1), lambda n: {}),
    ("dpm_order3_cosine_trailing", dict(PIXART_DPM, solver_order=3,
                                        beta_schedule="squaredcos_cap_v2",
                                        timestep_spacing="trailing"), lambda n: {}),
    ("dpm_order3_long_tail", dict(PIXART_DPM, solver_order=3, lower_order_final=False,
                                  final_sigmas_type="sigma_min"), lambda n: {}),
    # Clipped at lambda -4.6: timesteps start at 952, not 999.
    ("dpm_lambda_clipped", dict(PIXART_DPM, lambda_min_clipped=-4.6), lambda n: {}),
    ("dpm_sample_prediction", dict(PIXART_DPM, prediction_type="sample"), lambda n: {}),
    ("dpm_order1_euler_final", dict(PIXART_DPM, solver_order=1, euler_at_final=True),
     lambda n: {}),
    ("flux_dev", FLUX_DEV, lambda n: {"sigmas": flux_sigmas(n), "mu": 1.15}),
    ("flux_schnell", FLUX_SCHNELL, lambda n: {"sigmas": flux_sigmas(n), "mu": 0.5}),
    ("flow_static_shift", dict(FLUX_SCHNELL, shift=3.0), lambda n: {}),
    ("flow_dynamic_linear_terminal", dict(FLUX_DEV, time_shift_type="linear", shift_terminal=0.1),
     lambda n: {"mu": 2.0}),
    ("shapes_model", SHAPES_SCHEDULER, lambda n: {}),     # v-prediction, cosine betas
    ("ddim_eps", DDIM_EPS, lambda n: {}),
    ("ddim_v_clip", dict(DDIM_EPS, prediction_type="v_prediction", clip_sample=True,
                         set_alpha_to_one=True, timestep_spacing="trailing"), lambda n: {}),
    ("ddim_sample_prediction", dict(DDIM_EPS, prediction_type="sample"), lambda n: {}),
    ("ddim_linspace", dict(DDIM_EPS, timestep_spacing="linspace", beta_schedule="linear",
                           beta_start=0.0001, beta_end=0.02), lambda n: {}),
]


def fake_model(x, t):
  """A fixed smooth function of the sample and the timestep, so that a wrong sigma, a wrong step
  index or a wrong history shows; the same NumPy code feeds both loops."""
  x = np.asarray(x, np.float32)
  s = np.float32(float(t) / 1000)
  return (np.tanh(x) * (1 - s) + np.float32(0.5) * np.sin(3 * x + s)).astype(np.float32)


def fake_model_jax(x, t):
  s = t.astype(jnp.float32) / 1000
  return jnp.tanh(x) * (1 - s) + 0.5 * jnp.sin(3 * x + s)


def noise(shape=(1, 4, 8, 8), seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def diffusers_scheduler(config, num_steps, kwargs):
  cls = getattr(diffusers, config["_class_name"])
  scheduler = cls.from_config({k: v for k, v in config.items() if k != "_class_name"})
  scheduler.set_timesteps(num_steps, **kwargs)
  return scheduler


def diffusers_loop(scheduler, x):
  x = torch.from_numpy(x) * getattr(scheduler, "init_noise_sigma", 1.0)
  samples = []
  for t in scheduler.timesteps:
    out = torch.from_numpy(fake_model(x.numpy(), t))
    x = scheduler.step(out, t, x).prev_sample
    samples.append(x.numpy())
  return samples


def jax_loop(scheduler, x):
  step = jax.jit(scheduler.step)  # i goes in as a traced int32
  x = jnp.asarray(x) * scheduler.init_noise_sigma
  state = scheduler.init_state(x)
  samples = []
  for i, t in enumerate(scheduler.timesteps):
    x, state = step(state, jnp.int32(i), jnp.asarray(fake_model(x, t)), x)
    samples.append(np.asarray(x))
  return samples


@pytest.mark.parametrize("num_steps", [5, 20])
@pytest.mark.parametrize("name,config,kwargs", CASES, ids=[c[0] for c in CASES])
def test_matches_diffusers_step_by_step(name, config, kwargs, num_steps):
  theirs = diffusers_scheduler(config, num_steps, kwargs(num_steps))
  ours = schedulers.from_diffusers(config, num_steps, **kwargs(num_steps))

  expected_timesteps = theirs.timesteps.numpy()
  assert ours.timesteps.dtype == expected_timesteps.dtype
  np.testing.assert_array_equal(ours.timesteps, expected_timesteps)
  if hasattr(ours, "sigmas"):
    np.testing.assert_allclose(ours.sigmas, theirs.sigmas.numpy(), rtol=1e-6, atol=0)
  assert ours.init_noise_sigma == getattr(theirs, "init_noise_sigma", 1.0)

  x = noise()
  errors = [rel_error(a, b) for a, b in zip(jax_loop(ours, x), diffusers_loop(theirs, x))]
  assert len(errors) == num_steps
  assert max(errors) < 1e-5, (name, num_steps, errors)


@pytest.mark.parametrize("name", ["pixart", "sana",
                                  pytest.param("dpm_order3_cosine_trailing", marks=pytest.mark.slow),
                                  "flux_dev", "ddim_v_clip"])
def test_jitted_scan_equals_python_loop(name):
  _, config, kwargs = next(c for c in CASES if c[0] == name)
  scheduler = schedulers.from_diffusers(config, 8, **kwargs(8))
  timesteps = jnp.asarray(scheduler.timesteps)
  x0 = jnp.asarray(noise())

  @jax.jit
  def scanned(x):
    def body(carry, i):
      x, state = carry
      return scheduler.step(state, i, fake_model_jax(x, timesteps[i]), x), None
    (x, _), _ = jax.lax.scan(body, (x, scheduler.init_state(x)), jnp.arange(len(timesteps)))
    return x

  x, state = x0, scheduler.init_state(x0)
  for i in range(scheduler.num_steps):  # eager, Python int index
    x, state = scheduler.step(state, i, fake_model_jax(x, timesteps[i]), x)
  assert rel_error(scanned(x0), x) < 1e-6


def test_sample_keeps_its_dtype():
  scheduler = schedulers.from_diffusers(PIXART_DPM, 5)
  x = jnp.asarray(noise(), jnp.bfloat16)
  out, state = scheduler.step(scheduler.init_state(x), 0, x, x)
  assert out.dtype == jnp.bfloat16 and state.data_predictions.dtype == jnp.float32


@pytest.mark.parametrize("config,kwargs,message", [
    (dict(PIXART_DPM, use_karras_sigmas=True), {}, "use_karras_sigmas=True"),
    (dict(PIXART_DPM, algorithm_type="sde-dpmsolver++"), {}, "algorithm_type='sde-dpmsolver++'"),
    (dict(PIXART_DPM, thresholding=True), {}, "thresholding=True"),
    (dict(DDIM_EPS, rescale_betas_zero_snr=True), {}, "rescale_betas_zero_snr=True"),
    (dict(FLUX_DEV, stochastic_sampling=True), {"mu": 1.0}, "stochastic_sampling=True"),
    (FLUX_DEV, {}, "needs mu="),
    (PIXART_DPM, {"mu": 1.0}, "use_dynamic_shifting"),
    (PIXART_DPM, {"timesteps": [999, 500]}, "timesteps="),
    ({"_class_name": "EulerDiscreteScheduler"}, {}, "_class_name='EulerDiscreteScheduler'"),
])
def test_unsupported_config_raises(config, kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    schedulers.from_diffusers(config, 10, **kwargs)
