"""The forward process a model was trained with, read from its scheduler config: what a training
step noises and what the model must predict.

    noising = Noising.from_scheduler_config(read_scheduler_config(folder))
    noisy, t, target, weight = noising.sample(key, x0)

DDPM (PixArt, the Shapes model): timesteps drawn uniformly from the training schedule's
num_train_timesteps; the target is the noise ("epsilon") or v ("v_prediction"), as the config's
prediction_type says; the loss is uniform or, with "min_snr", Min-SNR-gamma weighted. Rectified flow (SANA's flow DPM-Solver, FLUX's FlowMatchEuler): x_t =
(1 - s) x0 + s noise, target noise - x0 (the velocity), s taken from the 1000-point training grid
at u ~ the weighting scheme's density, and the loss weighted as diffusers' SD3/SANA/FLUX DreamBooth
scripts do (compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3; default "none":
uniform u, weight 1). The grid is FlowMatchEulerDiscreteScheduler's training grid for this config:
shifted by its static `shift`, unshifted under dynamic shifting (FLUX.1-dev) and for a DPM-Solver
config (SANA's, whose flow_shift is a sampling setting).

`t` is in the units the family's predictor takes (the scheduler's timesteps: 0..999 for DDPM,
sigma * 1000 for flow), so one predictor serves sampling and training.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.diffusion import schedulers

WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")
DDPM_WEIGHTING_SCHEMES = ("none", "min_snr")


def is_flow(scheduler_config: dict) -> bool:
  return (scheduler_config.get("_class_name") == "FlowMatchEulerDiscreteScheduler"
          or scheduler_config.get("prediction_type") == "flow_prediction"
          or bool(scheduler_config.get("use_flow_sigmas")))


@dataclasses.dataclass(frozen=True, eq=False)
class Noising:
  kind: str                     # "ddpm" or "flow"
  prediction_type: str          # ddpm: "epsilon" or "v_prediction"; flow: "flow"
  table: np.ndarray             # ddpm: alphas_cumprod; flow: the sigma grid, largest first
  weighting_scheme: str = "none"
  logit_mean: float = 0.0
  logit_std: float = 1.0
  mode_scale: float = 1.29
  snr_gamma: float = 5.0        # ddpm "min_snr": the loss of step t weighted by min(SNR_t, gamma)

  @classmethod
  def from_scheduler_config(cls, config: dict, weighting_scheme: str = "none", **density) -> "Noising":
    if is_flow(config):
      if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme={weighting_scheme!r}: flow models take one of "
                         f"{WEIGHTING_SCHEMES}")
      n = config.get("num_train_timesteps", 1000)
      sigmas = np.linspace(1, n, n, dtype=np.float32)[::-1] / n
      shift = config.get("shift", 1.0)
      if config.get("_class_name") == "FlowMatchEulerDiscreteScheduler" and not config.get(
          "use_dynamic_shifting", False):
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
      return cls("flow", "flow", sigmas.astype(np.float32), weighting_scheme, **density)
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction"):
      raise ValueError(f"prediction_type={prediction_type!r}: training supports 'epsilon' and "
                       "'v_prediction' (and flow matching)")
    if weighting_scheme not in DDPM_WEIGHTING_SCHEMES:
      raise ValueError(f"weighting_scheme={weighting_scheme!r}: this scheduler is DDPM, which takes "
                       f"one of {DDPM_WEIGHTING_SCHEMES}")
    return cls("ddpm", prediction_type, schedulers.training_alphas_cumprod(config),
               weighting_scheme, **density)

  def sample(self, key, x0):
    """(x_t, t in the predictor's units (B,), target, per-example loss weight (B,))."""
    t_key, n_key = jax.random.split(key)
    b = x0.shape[0]
    noise = jax.random.normal(n_key, x0.shape, jnp.float32)
    expand = lambda v: v.reshape((b,) + (1,) * (x0.ndim - 1))
    x0 = x0.astype(jnp.float32)
    if self.kind == "ddpm":
      alphas = jnp.asarray(self.table)
      t = jax.random.randint(t_key, (b,), 0, alphas.shape[0])
      a = expand(alphas[t])
      noisy = jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise
      target = noise if self.prediction_type == "epsilon" else jnp.sqrt(a) * noise - jnp.sqrt(1 - a) * x0
      return noisy, t.astype(jnp.float32), target, self._ddpm_weight(alphas[t])
    u = self._density(t_key, b)
    n = self.table.shape[0]
    index = jnp.clip((u * n).astype(jnp.int32), 0, n - 1)
    sigma = jnp.asarray(self.table)[index]
    s = expand(sigma)
    noisy = (1 - s) * x0 + s * noise
    return noisy, sigma * n, noise - x0, self._weight(sigma)

  def _ddpm_weight(self, alpha):
    """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for an epsilon target and
    min(SNR, gamma) / (SNR + 1) for v, so the easy low-noise steps stop dominating the loss."""
    if self.weighting_scheme != "min_snr":
      return jnp.ones_like(alpha, jnp.float32)
    snr = alpha / (1 - alpha)
    return jnp.minimum(snr, self.snr_gamma) / (snr if self.prediction_type == "epsilon" else snr + 1)

  def _density(self, key, b):
    if self.weighting_scheme == "logit_normal":
      return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, (b,)))
    u = jax.random.uniform(key, (b,))
    if self.weighting_scheme == "mode":
      return 1 - u - self.mode_scale * (jnp.cos(math.pi * u / 2) ** 2 - 1 + u)
    return u

  def _weight(self, sigma):
    if self.weighting_scheme == "sigma_sqrt":
      return sigma ** -2.0
    if self.weighting_scheme == "cosmap":
      return 2 / (math.pi * (1 - 2 * sigma + 2 * sigma ** 2))
    return jnp.ones_like(sigma)


def weighted_mse(prediction, target, weight):
  """mean over examples of weight x the mean squared error of each; prediction channels beyond the
  target's (a learned-sigma half) are not trained."""
  prediction = prediction[..., :target.shape[-1]].astype(jnp.float32)
  per_example = jnp.mean((prediction - target) ** 2, axis=tuple(range(1, target.ndim)))
  return jnp.mean(weight * per_example)
