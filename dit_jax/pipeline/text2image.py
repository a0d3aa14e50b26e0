"""A text-to-image pipeline: PyTorch text encoder and VAE around the JAX backbone and sampler.

    pipe = Text2Image("pixart", "/path/to/PixArt-XL-2-1024-MS", num_steps=20)
    images = pipe(["a dog in the snow"], seeds=[0], height=1024, width=1024)   # uint8 NHWC

Loads from a diffusers pipeline folder: transformer/ (converted on the fly, or a Flax checkpoint
given as `transformer=`), scheduler/, tokenizer/ + text_encoder/ (and _2 for FLUX, _2 and _3 for
SD3), vae/ (none for pixel-space models such as the Shapes model).

Latents are NHWC in the sampler for every family (FLUX's predictor packs them into 2x2 patch
tokens per call). The weights are placed on the device once, on first use (`weights`): the jitted
programs take device arrays, never the host copy. `conditioning` + `denoise` is the lower-level path: add an intervention
("text_swap": TextSwap for PixArt/SANA, TextAttentionSwap for FLUX) or concept weights ("concept",
then denoise also returns the scores of every step) to the cond dict.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dit_jax import families, sharding
from dit_jax.pipeline import loading
from dit_jax.diffusion import denoise, schedulers
from dit_jax.diffusion import latents as latent_codecs
from dit_jax.diffusion.text import PromptEncoder, check_components, pipeline_default


def read_scheduler_config(folder: str) -> dict:
  path = os.path.join(folder, "scheduler", "scheduler_config.json")
  if not os.path.isfile(path):
    check_components(folder, ["scheduler"])
    raise FileNotFoundError(f"{path} is missing: the scheduler folder needs scheduler_config.json")
  with open(path) as f:
    return json.load(f)


def micro_conditions(config, n: int, height: int, width: int) -> dict:
  """Image size and aspect ratio for models that take them (PixArt at 1024px), n rows."""
  if not getattr(config, "additional_conditions", False):
    return {}
  return {"resolution": np.tile(np.array([[height, width]], np.float32), (n, 1)),
          "aspect_ratio": np.full((n, 1), height / width, np.float32)}


class Text2Image:

  def __init__(self, family: str, folder: str, num_steps: int = 20,
               guidance_scale: float | None = None, dtype=jnp.float32, transformer: str | None = None,
               cache_dir: str | None = None, negative_prompt: str = "", device: str = "cpu",
               max_sequence_length: int | None = None, loaded: tuple | None = None):
    """guidance_scale: CFG scale (PixArt, SANA, SD3) or FLUX.1-dev's distilled guidance (schnell
    ignores it); None takes the diffusers pipeline's default (4.5, 4.5, 7.0, 3.5). loaded: (module,
    params) already in memory (a trainer's), used instead of reading transformer/ again."""
    self.family, self.folder = family, folder
    self.record = families.get(family)
    if guidance_scale is None:
      guidance_scale = pipeline_default(self.record.pipeline_class, "guidance_scale")
    self.guidance_scale, self.negative_prompt = guidance_scale, negative_prompt
    self.dtype = dtype
    self.module, self.params = loaded or loading.load(transformer or folder, family, dtype)
    self._own_params = self._host_params = self.params
    self.encoder = PromptEncoder(self.record, folder, cache_dir=cache_dir, device=device,
                                 max_sequence_length=max_sequence_length)
    self.scheduler_config = read_scheduler_config(folder)
    self.num_steps = num_steps
    has_vae = os.path.isdir(os.path.join(folder, "vae"))
    self.codec = latent_codecs.TorchVAE(folder, device) if has_vae else latent_codecs.PixelSpace()
    self._predict = self.record.predictor(self.module, guidance_scale)
    self._programs = {}   # key -> jitted program, built once per pipeline (see `program`)
    self.mesh = None      # use_mesh: the devices sweeps and scoring split their rows over

  def use_mesh(self, mesh) -> None:
    """Run on every device of `mesh` (sharding.local_mesh): the weights placed by
    sharding.shard_params (replicated, or split over its "fsdp" axis), the rows of denoise and of
    the sweeps (split_rows) split over its devices, what rows share replicated (shared). The
    jitted programs follow these shardings, so each device samples its share of the rows."""
    self.mesh = mesh
    swapped = self.params is not self._own_params
    self._own_params = self.place(self._own_params)
    self.params = self.place(self.params) if swapped else self._own_params

  def use_local_devices(self, num_devices: int = 0, fsdp: int = 1) -> None:
    """use_mesh over num_devices of this process's devices (0: all; sharding.local_mesh, fsdp as
    in training, config.hosts); with one device the pipeline runs as it always did."""
    mesh = sharding.local_mesh(num_devices, fsdp)
    if mesh.devices.size > 1:
      self.use_mesh(mesh)

  def place(self, params):
    """params where the programs run: split over the mesh (sharding.shard_params), else on the
    default device. Arrays already placed so are not copied."""
    if self.mesh is not None:
      return sharding.shard_params(params, self.mesh)
    return jax.device_put(params)

  def weights(self):
    """pipe.params as every jitted program takes them: on the device, placed on first use and kept.
    Host (NumPy) weights given to a jitted call are copied to the device at every call, the whole
    model each time (1.2 GB PixArt, 24 GB FLUX). Lazily, so a pipeline used only for its encoders
    and VAE (a trainer's) holds no device copy."""
    if not on_device(self.params):
      own = self.params is self._own_params
      self.params = self.place(self.params)
      if own:
        self._own_params = self.params
    return self.params

  def release_weights(self) -> None:
    """Back to the host weights it was given, the device copy dropped: a trainer's pipeline after
    it has sampled class images, so that the copy does not sit beside the trainer's own frozen
    weights on the device for the whole run (the next program places them again)."""
    if self.params is self._own_params:
      self.params = self._own_params = self._host_params

  @property
  def device_count(self) -> int:
    return 1 if self.mesh is None else self.mesh.devices.size

  def split_rows(self, tree):
    """Arrays whose rows (axis 0) are split over the mesh's devices; without a mesh, as given."""
    tree = jax.tree_util.tree_map(jnp.asarray, tree)
    return tree if self.mesh is None else sharding.shard_batch(tree, self.mesh)

  def shared(self, tree):
    """Arrays every row reads, on every device of the mesh; without a mesh, as given."""
    tree = jax.tree_util.tree_map(jnp.asarray, tree)
    return tree if self.mesh is None else sharding.replicate(tree, self.mesh)

  def use_transformer(self, transformer: str | None) -> None:
    """Sample with the weights of another transformer folder of the same architecture (e.g. a
    fine-tuned export); None returns to the pipeline's own. Compiled loops are kept: the weights
    are their argument, not a constant."""
    if transformer is None:
      self.params = self._own_params
      return
    module, params = loading.load(transformer, self.family, self.dtype)
    if module.config != self.module.config:
      raise ValueError(f"{transformer} is a different architecture from the pipeline's transformer: "
                       f"{module.config} vs {self.module.config}")
    self.params = params if self.mesh is None else sharding.shard_params(params, self.mesh)

  def conditioning(self, prompts: Sequence[str], height: int, width: int) -> dict:
    """Text states (and micro-conditions) for a batch of prompts, from the prompt cache."""
    cond = dict(self.encoder(list(prompts)))
    if self.record.guidance == "cfg" and self.guidance_scale > 1.0:
      uncond = self.encoder([self.negative_prompt] * len(prompts), negative=True)
      cond.update({f"uncond_{k}": v for k, v in uncond.items()})   # caption (mask, pooled, ...)
    cond.update(micro_conditions(self.module.config, len(prompts), height, width))
    return {k: v for k, v in cond.items() if v is not None}

  def scheduler(self, latent_shape: tuple[int, ...]):
    """The schedule for this latent size (FLUX shifts its schedule with the image token count)."""
    kwargs = self.record.schedule_kwargs(self.scheduler_config, self.num_steps, latent_shape)
    return schedulers.from_diffusers(self.scheduler_config, self.num_steps, **kwargs)

  def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
    """NHWC latent shape of one image. A family that packs latent patches into tokens (FLUX: 2x2)
    counts the packed channels in in_channels."""
    patch, down = self.record.latent_patch, self.codec.downsample
    if height % (down * patch) or width % (down * patch):
      raise ValueError(f"height and width must be multiples of {down * patch}, got {height}x{width}")
    return height // down, width // down, self.module.config.in_channels // patch ** 2

  def loop(self, latent_shape: tuple[int, ...]):
    """The (un-jitted) denoising loop for this latent size: fn(params, noise, cond) -> latents.

    Callers compose it (jax.vmap over interventions, sharding) before jitting.
    """
    scheduler = self.scheduler(latent_shape)
    return lambda params, noise, cond: denoise.denoise(self._predict, scheduler, params, noise, cond)

  def program(self, key, build):
    """The jitted program `build()` returns, built once per key and kept with the pipeline: a
    localization run calls the same sweep for every concept, and jax.jit of a fresh function
    would trace and compile it again each time."""
    if key not in self._programs:
      self._programs[key] = jax.jit(build())
    return self._programs[key]

  def denoise(self, noise, cond):
    """Final latents (and per-step scores when cond has a concept mask), compiled once per size.
    On a mesh the rows are split over its devices, padded (the last row repeated) to a multiple of
    their count."""
    shape = tuple(noise.shape[1:])
    program = self.program(("denoise", shape), lambda: self.loop(shape))
    if self.mesh is None:
      return program(self.weights(), noise, cond)
    rows = noise.shape[0]
    pad = lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], -rows % self.device_count, axis=0)])
    out = program(self.weights(), *self.split_rows(jax.tree_util.tree_map(pad, (noise, cond))))
    if not isinstance(out, tuple):
      return out[:rows]
    latents, aux = out        # aux is stacked over steps: its rows are axis 1
    return latents[:rows], jax.tree_util.tree_map(lambda a: a[:, :rows], aux)

  def decode(self, latents) -> np.ndarray:
    """uint8 NHWC images from final latents."""
    return latent_codecs.to_uint8(self.codec.decode(np.asarray(latents, np.float32)))

  def latents(self, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int,
              noise: np.ndarray | None = None) -> np.ndarray:
    _require_prompts(prompts)
    if len(seeds) != len(prompts):
      raise ValueError(f"one seed per prompt: got {len(prompts)} prompts and {len(seeds)} seeds")
    if noise is None:
      noise = denoise.noise_for_seeds(seeds, self.latent_shape(height, width))
    cond = jax.tree_util.tree_map(jnp.asarray, self.conditioning(prompts, height, width))
    return np.asarray(self.denoise(jnp.asarray(noise), cond), np.float32)

  def __call__(self, prompts: Sequence[str], seeds: Sequence[int], height: int, width: int):
    return self.decode(self.latents(prompts, seeds, height, width))

  def generate(self, prompts: Sequence[str], height: int, width: int, batch_size: int = 32,
               desc: str | None = None) -> np.ndarray:
    """uint8 images of many prompts, `batch_size` at a time; prompt i uses seed i."""
    _require_prompts(prompts)
    starts = range(0, len(prompts), batch_size)
    return np.concatenate([self(prompts[i:i + batch_size], list(range(i, min(i + batch_size, len(prompts)))),
                                height, width)
                           for i in (tqdm(starts, desc=desc) if desc else starts)])


def on_device(tree) -> bool:
  """Every leaf is a jax.Array (on a device), none a host NumPy array."""
  return all(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(tree))


def _require_prompts(prompts: Sequence[str]) -> None:
  if not len(prompts):
    raise ValueError("no prompts: Text2Image needs at least one prompt (got an empty list)")
