"""Between latents and pixels: diffusers' VAEs in PyTorch, or pixel space for models without a VAE.

Latents on the JAX side are NHWC float32; images are NHWC in [-1, 1].
"""
from __future__ import annotations

import os

import numpy as np

from ports.checkpoints import numpy_to_torch, torch_to_numpy

VAE_CLASSES = ("AutoencoderKL", "AutoencoderDC")


class PixelSpace:
  """Identity codec for models trained directly on pixels (the Shapes model)."""
  downsample = 1

  def decode(self, latents: np.ndarray) -> np.ndarray:
    return np.asarray(latents, np.float32)

  def encode(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(images, np.float32)


class TorchVAE:
  """A diffusers VAE (AutoencoderKL for PixArt and FLUX, AutoencoderDC for SANA) from `vae/`."""

  def __init__(self, folder: str, device: str = "cpu", torch_dtype=None, subfolder: str = "vae"):
    import diffusers
    import torch
    path = os.path.join(folder, subfolder)
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
      raise FileNotFoundError(f"no VAE at {path}: expected {subfolder}/config.json and its weights "
                              f"(one of {', '.join(VAE_CLASSES)}) inside the pipeline folder {folder}")
    import json
    with open(config_path) as f:
      class_name = json.load(f).get("_class_name")
    if class_name not in VAE_CLASSES:
      raise ValueError(f"{config_path}: VAE class {class_name!r} is not one of {VAE_CLASSES}")
    self.vae = getattr(diffusers, class_name).from_pretrained(
        path, dtype=torch_dtype or torch.float32).to(device).eval()
    self.device = device
    config = self.vae.config
    self.scaling_factor = config.scaling_factor
    self.shift_factor = getattr(config, "shift_factor", None) or 0.0
    blocks = config.get("block_out_channels") or config.get("encoder_block_out_channels")
    self.downsample = 2 ** (len(blocks) - 1)

  def decode(self, latents: np.ndarray) -> np.ndarray:
    import torch
    z = numpy_to_torch(np.transpose(np.asarray(latents), (0, 3, 1, 2)).copy())
    z = z.to(self.device, self.vae.dtype) / self.scaling_factor + self.shift_factor
    with torch.no_grad():
      images = self.vae.decode(z, return_dict=False)[0]
    return np.transpose(torch_to_numpy(images.float()), (0, 2, 3, 1))

  def encode(self, images: np.ndarray) -> np.ndarray:
    import torch
    x = numpy_to_torch(np.transpose(np.asarray(images, np.float32), (0, 3, 1, 2)).copy())
    with torch.no_grad():
      out = self.vae.encode(x.to(self.device, self.vae.dtype))
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latent
    z = (z - self.shift_factor) * self.scaling_factor
    return np.transpose(torch_to_numpy(z.float()), (0, 2, 3, 1))


def to_uint8(images: np.ndarray) -> np.ndarray:
  return np.clip((np.asarray(images) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
