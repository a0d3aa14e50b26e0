"""Training batches of the Shapes world: rendered images with freshly dropped-out captions.

Images are rendered once (and cached as .npy); each draw re-captions its scenes with per-attribute
neutral dropout, so every neutral phrase is in distribution. Captions are encoded by the same
PromptEncoder the sampler uses (the diffusers pipeline's own encode_prompt), memoised in memory.
"""
from __future__ import annotations

import os

import numpy as np
from tqdm import tqdm

from dit_jax.shapes import render, world
from dit_jax.text import PromptEncoder


def rendered_scenes(seed: int, n: int, cache_dir: str | None):
  """(scenes, images (n, 32, 32, 3) float32); the render is cached under cache_dir."""
  scenes = world.scenes(seed, n, "train")
  path = cache_dir and os.path.join(cache_dir, f"shapes_train_{seed}_{n}.npy")
  if path and os.path.exists(path):
    return scenes, np.load(path)
  images = np.stack([render.render(s) for s in tqdm(scenes, desc="rendering training scenes")])
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", images)
    os.replace(path + ".tmp.npy", path)
  return scenes, images


class ShapesBatches:

  def __init__(self, pipeline_folder: str, num_images: int, seed: int, p_neutral: float,
               p_empty: float, max_sequence_length: int, cache_dir: str | None = None):
    self.scenes, self.images = rendered_scenes(seed, num_images, cache_dir)
    self.encoder = PromptEncoder("pixart", pipeline_folder, max_sequence_length=max_sequence_length)
    self.p_neutral, self.p_empty = p_neutral, p_empty
    self._encoded: dict[str, tuple[np.ndarray, np.ndarray]] = {}

  def encode(self, captions: list[str]):
    new = sorted({c for c in captions if c not in self._encoded})
    if new:
      out = self.encoder(new)
      self._encoded.update({c: (out["caption"][i], out["caption_mask"][i]) for i, c in enumerate(new)})
    return (np.stack([self._encoded[c][0] for c in captions]),
            np.stack([self._encoded[c][1] for c in captions]))

  def draw(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
    index = rng.integers(len(self.scenes), size=batch_size)
    captions = [world.training_caption(self.scenes[i], rng, self.p_neutral, self.p_empty) for i in index]
    caption, mask = self.encode(captions)
    return {"images": self.images[index], "caption": caption, "caption_mask": mask}
