"""Training batches of the Shapes world: rendered images with freshly dropped-out captions.

Images are rendered once (and cached as .npy); each pretraining draw re-captions its scenes with
per-attribute neutral dropout, so every neutral phrase is in distribution. Captions are encoded by
the same PromptEncoder the sampler uses (the diffusers pipeline's own encode_prompt), memoised in
memory. Batches are the generic trainer's trees ({"x0", "cond", "prior", "anchor"}, dit_jax/train/data.py);
the model works on pixels, so x0 is the image itself.
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from dit_jax import families, files
from dit_jax.train.data import Batches
from dit_jax.shapes import render, world
from dit_jax.diffusion.text import PromptEncoder


def rendered_scenes(seed: int, n: int, cache_dir: str | None):
  """(scenes, images (n, 32, 32, 3) float32); the render is cached under cache_dir."""
  scenes = world.scenes(seed, n, "train")
  path = cache_dir and os.path.join(cache_dir, f"shapes_train_{seed}_{n}.npy")
  if path and os.path.exists(path):
    return scenes, np.load(path)
  images = np.stack([render.render(s) for s in tqdm(scenes, desc="rendering training scenes")])
  if path:
    files.write_npy(path, images)
  return scenes, images


class CaptionEncoder:
  """Captions -> (caption states, mask) through the sampler's own PromptEncoder, memoised."""

  def __init__(self, pipeline_folder: str, max_sequence_length: int):
    self.encoder = PromptEncoder(families.get("pixart"), pipeline_folder, max_sequence_length=max_sequence_length)
    self._encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def __call__(self, captions: list[str]):
    new = sorted({c for c in captions if c not in self._encoded})
    if new:
      out = self.encoder(new)
      self._encoded.update({c: (out["caption"][i], out["caption_mask"][i]) for i, c in enumerate(new)})
    return (np.stack([self._encoded[c][0] for c in captions]),
            np.stack([self._encoded[c][1] for c in captions]))


class ShapesBatches:
  """Pretraining batches: random training scenes, captions with per-attribute neutral dropout."""

  def __init__(self, pipeline_folder: str, num_images: int, seed: int, p_neutral: float,
               p_empty: float, max_sequence_length: int, cache_dir: str | None = None):
    self.scenes, self.images = rendered_scenes(seed, num_images, cache_dir)
    self.encode = CaptionEncoder(pipeline_folder, max_sequence_length)
    self.p_neutral, self.p_empty = p_neutral, p_empty

  def draw(self, rng: np.random.Generator, batch_size: int) -> dict:
    index = rng.integers(len(self.scenes), size=batch_size)
    captions = [world.training_caption(self.scenes[i], rng, self.p_neutral, self.p_empty) for i in index]
    return {"x0": self.images[index], "cond": self.encoded(captions)}

  def encoded(self, captions: list[str]) -> dict:
    caption, mask = self.encode(captions)
    return {"caption": caption, "caption_mask": mask}


def encoded_set(encode: CaptionEncoder, images, captions: list[str]) -> dict:
  """{"x0": pixels, "cond": caption states} (images None: captions only, an anchor)."""
  caption, mask = encode(captions)
  out = {"cond": {"caption": caption, "caption_mask": mask}}
  if images is not None:
    if len(images) != len(captions):
      raise ValueError(f"{len(images)} images but {len(captions)} captions")
    out["x0"] = images
  return out


def render_all(scenes: list[world.Scene]) -> np.ndarray:
  return np.stack([render.render(s) for s in scenes])


def personalization_batches(encode: CaptionEncoder, pipe, name: str, num_subject: int,
                            num_prior: int, seed: int) -> Batches:
  """DreamBooth data: num_subject renders of the character planted as `name`, captioned with the
  name, and num_prior images of its class ("a character ...") drawn by the frozen model `pipe`."""
  subjects = world.planted_scenes(name, num_subject, seed)
  prior_scenes = world.planted_scenes(name, num_prior, seed + 1)
  prior_captions = [world.caption(s, ("character",)) for s in prior_scenes]
  prior = pipe.generate(prior_captions, 32, 32)
  prior = prior.astype(np.float32) / 127.5 - 1.0
  # "neutral": each subject caption with "a character" for the name, what the blocks outside
  # config.confine_text_to read (trainer.confine_text).
  return Batches(encoded_set(encode, render_all(subjects), [world.caption(s) for s in subjects]),
                 independent={"prior": encoded_set(encode, prior, prior_captions)},
                 paired={"neutral": encoded_set(encode, None, [world.caption(s, ("character",))
                                                               for s in subjects])})


def relook_batches(encode: CaptionEncoder, draw_prior, category: str, concept: str, target: str,
                   num_images: int, num_prior: int, seed: int, cache_dir: str | None = None) -> Batches:
  """Personalization of a concept the model knows to a new look: num_images scenes captioned as
  naming `concept`, rendered with `target` (another concept of its category) in its place, and
  num_prior images of the neutral captions of other such scenes drawn by the frozen model
  (draw_prior(captions) -> uint8 images): the class prior, what the caption says once the concept
  is taken out. cache_dir: keep the prior there, for runs that share it (other blocks or rates
  of the same concept and seed, from the same frozen model)."""
  if target == concept or target not in world.CONCEPTS.get(category, ()):
    raise ValueError(f"target {target!r} must be another concept of {category!r}: "
                     f"{[c for c in world.CONCEPTS.get(category, ()) if c != concept]}")
  scenes = world.concept_scenes(category, concept, num_images, seed)
  drawn = [world.with_concept(s, category, target) for s in scenes]
  prior_captions = [world.neutral_caption(s, category)
                    for s in world.concept_scenes(category, concept, num_prior, seed + 1)]
  name = f"prior_{category}_{concept}_{seed}_{num_prior}.npy".replace(" ", "-")
  path = cache_dir and os.path.join(cache_dir, name)
  if path and os.path.exists(path):
    prior = np.load(path)
  else:
    prior = draw_prior(prior_captions)
    if path:   # atomic and per process: parallel workers of a study share the prior
      files.write_npy(path, prior)
  return Batches(encoded_set(encode, render_all(drawn), [world.caption(s) for s in scenes]),
                 independent={"prior": encoded_set(encode, prior.astype(np.float32) / 127.5 - 1.0,
                                                   prior_captions)})


def unlearning_batches(encode: CaptionEncoder, category: str, concept: str, anchor: str,
                       num_images: int, seed: int) -> Batches:
  """Unlearning data: renders of scenes naming `concept`, with the anchor caption of each row:
  the neutral caption (anchor="neutral": ESD and concept ablation) or "" (anchor="empty": ESD's
  original anchor, for captions that name nothing but the concept)."""
  if anchor not in ("empty", "neutral"):
    raise ValueError(f"anchor={anchor!r}: choose 'empty' or 'neutral'")
  scenes = world.concept_scenes(category, concept, num_images, seed)
  anchors = ["" if anchor == "empty" else world.neutral_caption(s, category) for s in scenes]
  return Batches(encoded_set(encode, render_all(scenes), [world.caption(s) for s in scenes]),
                 paired={"anchor": encoded_set(encode, None, anchors)})
