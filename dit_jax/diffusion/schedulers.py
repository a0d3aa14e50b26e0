"""Diffusion schedulers in pure JAX that reproduce diffusers' step by step.

    scheduler = from_diffusers(config, num_inference_steps, **set_timesteps_kwargs)
    x = noise * scheduler.init_noise_sigma
    state = scheduler.init_state(x)
    for i, t in enumerate(scheduler.timesteps):     # or i traced, inside lax.scan / fori_loop
      x, state = scheduler.step(state, i, model(x, t), x)

`config` is the dict of a diffusers scheduler_config.json ("_class_name" picks the scheduler) and
`set_timesteps_kwargs` are what the diffusers pipeline passes to `set_timesteps` (FLUX: `sigmas=`,
`mu=`). The schedule is computed once, with NumPy, in the precision diffusers uses, so `timesteps`
holds exactly diffusers' values. `step` is pure JAX with no Python branching on the step index, so
the whole loop jits as one scan. Updates run in float32 and the sample comes back in its own dtype.

What `timesteps` holds, i.e. what the pipeline feeds the model:
  DDIMScheduler, DPMSolverMultistepScheduler: integer training timesteps (int64), SANA's flow
    variant included (int(sigma * 1000), truncated); the pipelines pass them on unchanged.
  FlowMatchEulerDiscreteScheduler: sigma * 1000 (float32); the FLUX pipeline divides by 1000 itself.

Where we differ from diffusers, on purpose:
  - `i` is the step index. diffusers finds it from the first timestep and starts at the second
    match when timesteps[0] repeats; we never search.
  - diffusers converts the model output to a data prediction in the model's dtype (DPM-Solver) or
    runs the whole DDIM step in it; we do both in float32. Identical for float32 models.
  - betas: torch.linspace's float32 kernel rounds depending on the CPU's vector width; we take the
    correctly rounded values, which can differ by 1 ulp (alphas_cumprod then agree to ~4e-7).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def from_diffusers(config: dict, num_inference_steps: int, **set_timesteps_kwargs) -> Scheduler:
  """The scheduler diffusers builds from `config`, after set_timesteps(num_inference_steps, ...)."""
  name = config.get("_class_name")
  if name not in _BUILDERS:
    raise ValueError(f"_class_name={name!r} is not supported; supported: {sorted(_BUILDERS)}")
  return _BUILDERS[name](config, num_inference_steps, **set_timesteps_kwargs)


# eq=False: hashed by identity (its fields are arrays), so jit can take a bound `step`.
@dataclasses.dataclass(frozen=True, eq=False)
class Scheduler:
  """A fixed schedule and a pure step; subclasses define `_update` on float32 arrays."""
  timesteps: np.ndarray
  # Every supported scheduler starts from unit-variance noise.
  init_noise_sigma: ClassVar[float] = 1.0

  @property
  def num_steps(self) -> int:
    return len(self.timesteps)

  def init_state(self, sample: jax.Array) -> Any:
    del sample
    return ()

  def step(self, state, i, model_output: jax.Array, sample: jax.Array):
    """(prev_sample, state) after step `i` (an int or traced int32) from `sample`."""
    prev_sample, state = self._update(state, jnp.asarray(i, jnp.int32),
                                      model_output.astype(jnp.float32), sample.astype(jnp.float32))
    return prev_sample.astype(sample.dtype), state

  def _update(self, state, i, model_output, sample):
    raise NotImplementedError


def _table(values: np.ndarray) -> jax.Array:
  """A schedule array as a float32 JAX constant (x64 is off, so say the dtype rather than hope)."""
  return jnp.asarray(values, jnp.float32)


# --------------------------------------------------------------------------------------------
# Reading a diffusers config.


def _read_config(class_name: str, config: dict, defaults: dict, supported: dict) -> dict:
  """The values of the keys in `defaults` (diffusers' constructor defaults where a key is absent).

  `supported` maps a key to the values we implement; any other raises. Keys we do not read are
  ignored, as diffusers ignores keys its constructor does not take.
  """
  values = {key: config.get(key, default) for key, default in defaults.items()}
  for key, allowed in supported.items():
    if values[key] not in allowed:
      raise ValueError(f"{class_name}: {key}={values[key]!r} is not supported "
                       f"(supported: {', '.join(map(repr, allowed))})")
  return values


def _check_kwargs(class_name: str, kwargs: dict, allowed: tuple[str, ...]):
  for key in kwargs:
    if key not in allowed:
      raise ValueError(f"{class_name}: set_timesteps argument {key}= is not supported "
                       f"(supported: {', '.join(allowed) or 'none'})")


_BETA_DEFAULTS = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02,
                      beta_schedule="linear", trained_betas=None, rescale_betas_zero_snr=False)
_BETA_SUPPORTED = dict(beta_schedule=BETA_SCHEDULES, rescale_betas_zero_snr=(False,))


def alphas_cumprod(cfg: dict) -> np.ndarray:
  """float32 products of (1 - beta) over the training timesteps, as diffusers builds them."""
  n = cfg["num_train_timesteps"]
  if cfg["trained_betas"] is not None:
    betas = np.asarray(cfg["trained_betas"], np.float32)
  elif cfg["beta_schedule"] == "linear":
    betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n).astype(np.float32)
  elif cfg["beta_schedule"] == "scaled_linear":  # linear in sqrt(beta), squared in float32
    betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n).astype(np.float32) ** 2
  else:  # squaredcos_cap_v2: GLIDE's cosine alpha_bar, discretised in float64
    t = np.arange(n + 1) / n
    alpha_bar = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999).astype(np.float32)
  # torch's CPU cumprod accumulates float32 in float64; doing the same makes the products identical.
  return np.cumprod((1.0 - betas).astype(np.float64)).astype(np.float32)


def training_alphas_cumprod(config: dict) -> np.ndarray:
  """alphas_cumprod of the training noise schedule a diffusers scheduler config describes
  (diffusers' defaults for absent keys): what a DDPM-trained model's loss draws timesteps from."""
  defaults = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02,
              "beta_schedule": "linear", "trained_betas": None}
  return alphas_cumprod({k: config.get(k, v) for k, v in defaults.items()})


# --------------------------------------------------------------------------------------------
# DPM-Solver++ (multistep), for PixArt and SANA.


class MultistepState(NamedTuple):
  data_predictions: jax.Array  # (solver_order, *sample.shape) float32, the newest last


# Columns of DPMSolverMultistep.coefficients, one row per step (see solver_coefficients).
_COEFFICIENTS = ("sample", "newest", "d1_0", "d1_1", "first", "third", "r_ratio", "r_sum")


@dataclasses.dataclass(frozen=True, eq=False)
class DPMSolverMultistep(Scheduler):
  """DPM-Solver++ of order 1-3 (arXiv:2211.01095), stepping on data predictions x0.

  Per noise level k (num_steps + 1 of them, the last one the end of sampling) the tables hold
  diffusers' float32 alpha_t, sigma_t and lambda = log(alpha_t / sigma_t). Step i goes from level i
  to level i + 1 with the order min(max_order[i], i + 1): the history holds the i predictions of
  the steps before (diffusers' lower_order_nums), so the order is a function of i alone. Each
  step's coefficients are one row of a NumPy table built here: every step is the same arithmetic,
  with no conditional in the loop (on a GPU, XLA runs a conditional by copying its branch index to
  the host at every step).
  """
  sigmas: np.ndarray     # (num_steps + 1,) float32, diffusers' scheduler.sigmas
  alpha_t: np.ndarray
  sigma_t: np.ndarray
  lambdas: np.ndarray    # +inf at a final sigma of zero
  max_order: np.ndarray  # (num_steps,) int32: solver_order, lowered at the end as diffusers does
  solver_order: int
  solver_type: str       # "midpoint" or "heun" (order 2 only)
  prediction_type: str
  # (num_steps, len(_COEFFICIENTS)) float32, from the tables above (dataclasses.replace rebuilds it).
  coefficients: np.ndarray = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    object.__setattr__(self, "coefficients", solver_coefficients(
        self.lambdas, self.alpha_t, self.sigma_t, self.orders, self.solver_type))

  @property
  def orders(self) -> np.ndarray:
    """(num_steps,) the order of each step: at most i + 1, as step i has i predictions before it."""
    return np.minimum(self.max_order, np.arange(1, len(self.max_order) + 1)).astype(np.int32)

  def init_state(self, sample):
    return MultistepState(jnp.zeros((self.solver_order, *sample.shape), jnp.float32))

  def _update(self, state, i, model_output, sample):
    newest = self._data_prediction(i, model_output, sample)
    history = jnp.concatenate([state.data_predictions[1:], newest[None]])
    return self._solver_update(_table(self.coefficients)[i], history, sample), MultistepState(history)

  def _data_prediction(self, i, model_output, sample):
    """x0 from the model output at level i (diffusers' convert_model_output)."""
    alpha, sigma = _table(self.alpha_t)[i], _table(self.sigma_t)[i]
    if self.prediction_type == "epsilon":
      return (sample - sigma * model_output) / alpha
    if self.prediction_type == "v_prediction":
      return alpha * sample - sigma * model_output
    if self.prediction_type == "flow_prediction":  # here sigma_t is the flow sigma itself
      return sample - sigma * model_output
    return model_output  # "sample"

  def _solver_update(self, c, history, sample):
    """Level i -> i + 1 with the step's coefficients `c`: diffusers' expressions and order of
    operations at every order, so float32 rounds alike. A lower-order step has zeros where the
    higher orders' terms are, which add exactly nothing (the history is finite)."""
    x = c[0] * sample - c[1] * history[-1]
    if self.solver_order == 1:
      return x
    d1_0 = c[2] * (history[-1] - history[-2])
    if self.solver_order == 2:
      return x + c[4] * d1_0
    diff = d1_0 - c[3] * (history[-2] - history[-3])
    return x + c[4] * (d1_0 + c[6] * diff) - c[5] * (c[7] * diff)


def solver_coefficients(lambdas, alpha_t, sigma_t, orders, solver_type: str) -> np.ndarray:
  """Per step i, in float32 as diffusers rounds them (multistep_dpm_solver_{first,second,third}_
  order_update), the factors of prev = sample_c * sample - newest_c * D0 + first * d1 - third * d2
  with d1_0 = d1_0_c * (D0 - D1), d1_1 = d1_1_c * (D1 - D2), diff = d1_0 - d1_1,
  d1 = d1_0 + r_ratio * diff, d2 = r_sum * diff (D0 the newest data prediction): zero where the
  step's order has no such term. Column names: _COEFFICIENTS."""
  lam, alpha, sigma = (np.asarray(a, np.float32) for a in (lambdas, alpha_t, sigma_t))
  table = np.zeros((len(orders), len(_COEFFICIENTS)), np.float32)
  for i, order in enumerate(orders):
    with np.errstate(over="ignore"):   # h = inf on a last step to sigma 0: exp(-h) - 1 = -1
      h = lam[i + 1] - lam[i]
      exp_minus_1 = np.exp(-h) - np.float32(1)  # not expm1: diffusers rounds it this way
    row = table[i]
    row[0], row[1] = sigma[i + 1] / sigma[i], alpha[i + 1] * exp_minus_1
    if order == 1:   # DDIM-like; at a final sigma of 0 (h = inf) this is exactly x0
      continue
    r0 = (lam[i] - lam[i - 1]) / h
    row[2] = np.float32(1) / r0
    if order == 2 and solver_type == "midpoint":
      row[4] = -(np.float32(0.5) * row[1])
      continue
    row[4] = alpha[i + 1] * (exp_minus_1 / h + np.float32(1))
    if order == 2:  # heun
      continue
    r1 = (lam[i - 1] - lam[i - 2]) / h
    row[3], row[6], row[7] = np.float32(1) / r1, r0 / (r0 + r1), np.float32(1) / (r0 + r1)
    row[5] = alpha[i + 1] * ((exp_minus_1 + h) / h ** 2 - np.float32(0.5))
  if not np.isfinite(table).all():
    raise ValueError(f"DPM-Solver coefficients are not finite at steps "
                     f"{np.flatnonzero(~np.isfinite(table).all(axis=1)).tolist()}: a step of order "
                     "2 or 3 ends at sigma 0 (lower_order_final / final_sigmas_type)")
  return table


_DPM_DEFAULTS = dict(
    _BETA_DEFAULTS, solver_order=2, prediction_type="epsilon", thresholding=False,
    algorithm_type="dpmsolver++", solver_type="midpoint", lower_order_final=True,
    euler_at_final=False, use_karras_sigmas=False, use_exponential_sigmas=False,
    use_beta_sigmas=False, use_lu_lambdas=False, use_flow_sigmas=False, flow_shift=1.0,
    final_sigmas_type="zero", lambda_min_clipped=-math.inf, variance_type=None,
    timestep_spacing="linspace", steps_offset=0, use_dynamic_shifting=False,
    time_shift_type="exponential")
_DPM_SUPPORTED = dict(
    _BETA_SUPPORTED, algorithm_type=("dpmsolver++",), solver_order=(1, 2, 3),
    solver_type=("midpoint", "heun"),
    prediction_type=("epsilon", "v_prediction", "flow_prediction", "sample"),
    thresholding=(False,), variance_type=(None,), use_karras_sigmas=(False,),
    use_exponential_sigmas=(False,), use_beta_sigmas=(False,), use_lu_lambdas=(False,),
    final_sigmas_type=("zero", "sigma_min"), timestep_spacing=("linspace", "leading", "trailing"),
    time_shift_type=("exponential",))


def _dpm_solver_multistep(config: dict, num_inference_steps: int, mu: float | None = None,
                          **kwargs) -> DPMSolverMultistep:
  name = "DPMSolverMultistepScheduler"
  _check_kwargs(name, kwargs, ("mu",))
  cfg = _read_config(name, config, _DPM_DEFAULTS, _DPM_SUPPORTED)
  n, num_train = num_inference_steps, cfg["num_train_timesteps"]
  flow_shift = cfg["flow_shift"]
  if mu is not None:  # resolution-dependent shift: diffusers replaces flow_shift by exp(mu)
    if not cfg["use_dynamic_shifting"]:
      raise ValueError(f"{name}: mu= needs use_dynamic_shifting=True in the config")
    flow_shift = np.exp(mu)
  cumprod = alphas_cumprod(cfg)
  train_sigmas = ((1 - cumprod) / cumprod) ** 0.5  # float32, sigma of the VE form x / alpha

  # The largest timestep whose lambda is above lambda_min_clipped (all of them by default).
  train_lambdas = np.log(cumprod ** 0.5) - np.log((1 - cumprod) ** 0.5)
  last_timestep = num_train - int(np.searchsorted(train_lambdas[::-1], cfg["lambda_min_clipped"]))
  spacing = cfg["timestep_spacing"]
  if spacing == "linspace":
    timesteps = np.linspace(0, last_timestep - 1, n + 1).round()[::-1][:-1].astype(np.int64)
  elif spacing == "leading":
    step_ratio = last_timestep // (n + 1)
    timesteps = (np.arange(n + 1) * step_ratio).round()[::-1][:-1].astype(np.int64)
    timesteps += cfg["steps_offset"]
  else:  # trailing
    timesteps = np.arange(last_timestep, 0, -num_train / n).round().astype(np.int64) - 1

  if cfg["use_flow_sigmas"]:  # SANA: sigmas of rectified flow, shifted; timesteps follow them
    sigmas = 1.0 - np.linspace(1, 1 / num_train, n + 1)
    sigmas = np.flip(flow_shift * sigmas / (1 + (flow_shift - 1) * sigmas))[:-1]
    timesteps = (sigmas * num_train).astype(np.int64)
  else:
    sigmas = np.interp(timesteps, np.arange(num_train), train_sigmas)
  final_sigma = train_sigmas[0] if cfg["final_sigmas_type"] == "sigma_min" else 0.0
  sigmas = np.append(sigmas, final_sigma).astype(np.float32)

  if cfg["use_flow_sigmas"]:
    alpha_t, sigma_t = 1 - sigmas, sigmas
  else:
    alpha_t = 1 / ((sigmas ** 2 + 1) ** 0.5)
    sigma_t = sigmas * alpha_t
  with np.errstate(divide="ignore"):  # log(0) = -inf at a final sigma of zero, lambda = +inf
    lambdas = np.log(alpha_t) - np.log(sigma_t)

  # Lower orders at the end: first order on the last step (always when it ends at sigma 0, where
  # higher orders divide by h = inf), second order on the one before, for short schedules.
  max_order = np.full(n, cfg["solver_order"], np.int32)
  short = cfg["lower_order_final"] and n < 15
  if short or cfg["euler_at_final"] or cfg["final_sigmas_type"] == "zero":
    max_order[-1] = 1
  if short and n >= 2:
    max_order[-2] = min(max_order[-2], 2)
  return DPMSolverMultistep(
      timesteps=timesteps, sigmas=sigmas, alpha_t=alpha_t, sigma_t=sigma_t, lambdas=lambdas,
      max_order=max_order, solver_order=cfg["solver_order"], solver_type=cfg["solver_type"],
      prediction_type=cfg["prediction_type"])


# --------------------------------------------------------------------------------------------
# Euler on a rectified flow, for FLUX.


@dataclasses.dataclass(frozen=True, eq=False)
class FlowMatchEuler(Scheduler):
  """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) * velocity; the model predicts noise - data."""
  sigmas: np.ndarray  # (num_steps + 1,) float32, ending at 0

  def _update(self, state, i, model_output, sample):
    sigmas = _table(self.sigmas)
    return sample + (sigmas[i + 1] - sigmas[i]) * model_output, state


_FLOW_DEFAULTS = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, invert_sigmas=False,
    shift_terminal=None, use_karras_sigmas=False, use_exponential_sigmas=False,
    use_beta_sigmas=False, time_shift_type="exponential", stochastic_sampling=False)
_FLOW_SUPPORTED = dict(
    invert_sigmas=(False,), use_karras_sigmas=(False,), use_exponential_sigmas=(False,),
    use_beta_sigmas=(False,), time_shift_type=("exponential", "linear"),
    stochastic_sampling=(False,))


def _flow_match_euler(config: dict, num_inference_steps: int, sigmas=None, mu: float | None = None,
                      **kwargs) -> FlowMatchEuler:
  name = "FlowMatchEulerDiscreteScheduler"
  _check_kwargs(name, kwargs, ("sigmas", "mu"))
  cfg = _read_config(name, config, _FLOW_DEFAULTS, _FLOW_SUPPORTED)
  num_train, shift = cfg["num_train_timesteps"], cfg["shift"]
  shifted = lambda s: shift * s / (1 + (shift - 1) * s)
  if sigmas is None:
    # Evenly spaced between the ends of the training schedule, which diffusers has already
    # shifted when the shift is static (so a static shift applies twice to these ends).
    train_sigmas = np.linspace(1, num_train, num_train, dtype=np.float32)[::-1] / num_train
    if not cfg["use_dynamic_shifting"]:
      train_sigmas = shifted(train_sigmas)
    sigma_max, sigma_min = float(train_sigmas[0]), float(train_sigmas[-1])
    sigmas = np.linspace(sigma_max * num_train, sigma_min * num_train, num_inference_steps)
    sigmas = sigmas / num_train
  else:
    sigmas = np.asarray(sigmas).astype(np.float32)
    if len(sigmas) != num_inference_steps:
      raise ValueError(f"{name}: {len(sigmas)} sigmas for {num_inference_steps} steps")
  if cfg["use_dynamic_shifting"]:  # resolution-dependent shift (FLUX.1-dev); sigma=1 in diffusers
    if mu is None:
      raise ValueError(f"{name}: use_dynamic_shifting=True needs mu=")
    if cfg["time_shift_type"] == "exponential":
      sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    else:
      sigmas = mu / (mu + (1 / sigmas - 1))
  else:  # diffusers ignores mu here, and so do we
    sigmas = shifted(sigmas)
  if cfg["shift_terminal"]:  # stretch so that the last sigma is shift_terminal
    one_minus = 1 - sigmas
    sigmas = 1 - one_minus / (one_minus[-1] / (1 - cfg["shift_terminal"]))
  sigmas = sigmas.astype(np.float32)
  return FlowMatchEuler(timesteps=sigmas * np.float32(num_train),
                        sigmas=np.append(sigmas, np.float32(0)))


# --------------------------------------------------------------------------------------------
# DDIM (eta = 0).


@dataclasses.dataclass(frozen=True, eq=False)
class DDIM(Scheduler):
  """Deterministic DDIM. diffusers steps to t - num_train // num_steps (not to the next timestep in
  the schedule, which differs for linspace/trailing spacing); the tables hold exactly that."""
  alphas_cumprod: np.ndarray       # (num_steps,) float32 at each timestep
  alphas_cumprod_prev: np.ndarray  # (num_steps,) float32 at the step's target
  prediction_type: str
  clip_range: float | None         # clip x0 to [-clip_range, clip_range] (clip_sample)

  def _update(self, state, i, model_output, sample):
    alpha_prod = _table(self.alphas_cumprod)[i]
    alpha_prod_prev = _table(self.alphas_cumprod_prev)[i]
    beta_prod = 1 - alpha_prod
    if self.prediction_type == "epsilon":
      x0 = (sample - beta_prod ** 0.5 * model_output) / alpha_prod ** 0.5
      eps = model_output
    elif self.prediction_type == "v_prediction":
      x0 = alpha_prod ** 0.5 * sample - beta_prod ** 0.5 * model_output
      eps = alpha_prod ** 0.5 * model_output + beta_prod ** 0.5 * sample
    else:  # "sample"
      x0 = model_output
      eps = (sample - alpha_prod ** 0.5 * x0) / beta_prod ** 0.5
    if self.clip_range is not None:  # eps stays unclipped, as in diffusers by default
      x0 = jnp.clip(x0, -self.clip_range, self.clip_range)
    return alpha_prod_prev ** 0.5 * x0 + (1 - alpha_prod_prev) ** 0.5 * eps, state


_DDIM_DEFAULTS = dict(
    _BETA_DEFAULTS, clip_sample=True, set_alpha_to_one=True, steps_offset=0,
    prediction_type="epsilon", thresholding=False, clip_sample_range=1.0,
    timestep_spacing="leading")
_DDIM_SUPPORTED = dict(
    _BETA_SUPPORTED, prediction_type=("epsilon", "v_prediction", "sample"), thresholding=(False,),
    timestep_spacing=("linspace", "leading", "trailing"))


def _ddim(config: dict, num_inference_steps: int, **kwargs) -> DDIM:
  name = "DDIMScheduler"
  _check_kwargs(name, kwargs, ())
  cfg = _read_config(name, config, _DDIM_DEFAULTS, _DDIM_SUPPORTED)
  n, num_train = num_inference_steps, cfg["num_train_timesteps"]
  if n > num_train:
    raise ValueError(f"{name}: {n} steps exceed num_train_timesteps={num_train}")
  spacing = cfg["timestep_spacing"]
  if spacing == "linspace":
    timesteps = np.linspace(0, num_train - 1, n).round()[::-1].astype(np.int64)
  elif spacing == "leading":
    timesteps = (np.arange(n) * (num_train // n)).round()[::-1].astype(np.int64)
    timesteps += cfg["steps_offset"]
  else:  # trailing
    timesteps = np.round(np.arange(num_train, 0, -num_train / n)).astype(np.int64) - 1
  cumprod = alphas_cumprod(cfg)
  final = np.float32(1.0) if cfg["set_alpha_to_one"] else cumprod[0]
  targets = timesteps - num_train // n
  cumprod_prev = np.where(targets >= 0, cumprod[np.maximum(targets, 0)], final)
  return DDIM(timesteps=timesteps, alphas_cumprod=cumprod[timesteps],
              alphas_cumprod_prev=cumprod_prev.astype(np.float32),
              prediction_type=cfg["prediction_type"],
              clip_range=float(cfg["clip_sample_range"]) if cfg["clip_sample"] else None)


_BUILDERS = {
    "DPMSolverMultistepScheduler": _dpm_solver_multistep,
    "FlowMatchEulerDiscreteScheduler": _flow_match_euler,
    "DDIMScheduler": _ddim,
}
