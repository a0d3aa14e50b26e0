"""Deterministic NumPy renderer: Scene -> (32, 32, 3) float32 image in [-1, 1] (NHWC when batched).

Drawn at SUPERSAMPLE x the resolution and box-filtered down, which antialiases edges. The scene's
render_seed sets the mild randomness: size, sub-pixel jitter, a small rotation, texture phase,
background details. A dark outline keeps every shape readable on every background.
"""
from __future__ import annotations

import numpy as np

from dit_jax.shapes import world

SIZE = 32
SUPERSAMPLE = 4

# Saturated shape colours; backgrounds below are muted or dark so no colour hides in a place.
RGB = {
    "red": (0.92, 0.12, 0.10), "green": (0.10, 0.78, 0.22), "blue": (0.12, 0.30, 0.98),
    "yellow": (0.98, 0.88, 0.08), "purple": (0.62, 0.16, 0.85), "orange": (1.00, 0.52, 0.00),
}
# Centre of the shape in pixels (x, y), y downwards.
CENTRES = {"on the left": (8.5, 16.0), "on the right": (23.5, 16.0), "at the top": (16.0, 8.5),
           "at the bottom": (16.0, 23.5), "in the middle": (16.0, 16.0)}


def _polygon_mask(x, y, vertices):
  """Even-odd point-in-polygon for arrays of points (vertices: (N, 2))."""
  inside = np.zeros(x.shape, bool)
  for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
    crosses = (y0 > y) != (y1 > y)
    x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0 + 1e-12)
    inside ^= crosses & (x < x_at)
  return inside


def _regular(n_points, radii, rotation=-np.pi / 2):
  angles = rotation + np.arange(n_points * len(radii)) * 2 * np.pi / (n_points * len(radii))
  r = np.resize(np.asarray(radii), len(angles))
  return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Inside test in unit coordinates (radius ~1, v downwards)."""
  if shape == "circle":
    return u * u + v * v <= 0.92
  if shape == "square":
    return np.maximum(np.abs(u), np.abs(v)) <= 0.78
  if shape == "triangle":
    return _polygon_mask(u, v, _regular(3, [1.22]) + [0, 0.22])
  if shape == "star":
    return _polygon_mask(u, v, _regular(5, [1.2, 0.55]) + [0, 0.08])
  if shape == "heart":
    # Implicit heart curve, flipped so the point is at the bottom.
    x, y = u * 1.15, -v * 1.15 + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
  if shape == "cross":
    return ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 0.95))
  raise ValueError(f"unknown shape {shape!r}; shapes are {world.SHAPES}")


def texture_mask(texture: str, px: np.ndarray, py: np.ndarray, phase: np.ndarray) -> np.ndarray:
  """Where the texture's second (dark) tone goes; px, py in output pixels."""
  if texture == "solid":
    return np.zeros(px.shape, bool)
  if texture == "striped":
    return ((px + py + phase[0]) % 4.0) < 2.0
  if texture == "dotted":
    dx = (px + phase[0]) % 4.0 - 2.0
    dy = (py + phase[1]) % 4.0 - 2.0
    return dx * dx + dy * dy <= 1.25 ** 2  # big enough to survive on a star's thin arms
  if texture == "checkered":
    return (np.floor((px + phase[0]) / 3.0) + np.floor((py + phase[1]) / 3.0)) % 2 == 1
  raise ValueError(f"unknown texture {texture!r}; textures are {world.TEXTURES}")


def background(place: str, px, py, rng: np.random.Generator) -> np.ndarray:
  """(H, W, 3) background in [0, 1] at the supersampled grid."""
  t = py / SIZE  # 0 at the top, 1 at the bottom
  ones = np.ones_like(px)[..., None]
  if place == "the sky":
    img = ones * np.array([0.35, 0.62, 0.95]) + (t[..., None] * np.array([0.35, 0.25, 0.05]))
    for _ in range(2):  # soft clouds
      cx, cy = rng.uniform(0, SIZE), rng.uniform(2, 14)
      d = ((px - cx) / 5.0) ** 2 + ((py - cy) / 2.2) ** 2
      img = img + 0.25 * np.exp(-d)[..., None]
    return np.clip(img, 0, 1)
  if place == "the grass":
    blades = (np.sin(px * 2.1 + rng.uniform(0, 6)) * np.sin(px * 0.7 + py * 0.2) > 0.3)
    img = ones * np.array([0.30, 0.50, 0.22]) * (1.0 - 0.2 * t[..., None])
    return img * np.where(blades, 0.8, 1.0)[..., None]
  if place == "the desert":
    dunes = 0.06 * np.sin(py * 0.9 + 1.5 * np.sin(px * 0.3 + rng.uniform(0, 6)))
    return np.clip(ones * np.array([0.86, 0.74, 0.50]) + dunes[..., None], 0, 1)
  if place == "the night":
    img = ones * np.array([0.04, 0.05, 0.20]) * (1.0 + 0.5 * t[..., None])
    stars = rng.random((SIZE, SIZE)) < 0.04
    star_px = np.kron(stars, np.ones((SUPERSAMPLE, SUPERSAMPLE), bool))
    return np.where(star_px[..., None], 0.9, img)
  if place == "the snow":
    speck = np.kron(rng.random((SIZE, SIZE)) < 0.08, np.ones((SUPERSAMPLE, SUPERSAMPLE), bool))
    img = ones * np.array([0.92, 0.94, 0.98]) * (1.0 - 0.05 * t[..., None])
    return np.where(speck[..., None], img * 0.85, img)
  raise ValueError(f"unknown place {place!r}; places are {world.PLACES}")


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
  """Square-window dilation, separable (2 x (2r+1) shifts instead of (2r+1)^2)."""
  for axis in (0, 1):
    out = mask.copy()
    for shift in range(1, radius + 1):
      out |= np.roll(mask, shift, axis=axis) | np.roll(mask, -shift, axis=axis)
    mask = out
  return mask


def render(scene: world.Scene) -> np.ndarray:
  """(SIZE, SIZE, 3) float32 in [-1, 1]."""
  rng = np.random.default_rng(scene.render_seed)
  radius = rng.uniform(6.0, 7.3)
  cx, cy = np.asarray(CENTRES[scene.position]) + rng.uniform(-1.2, 1.2, size=2)
  angle = rng.uniform(-0.15, 0.15)
  phase = rng.uniform(0, 4, size=2)

  n = SIZE * SUPERSAMPLE
  px, py = np.meshgrid((np.arange(n) + 0.5) / SUPERSAMPLE, (np.arange(n) + 0.5) / SUPERSAMPLE)
  img = background(scene.place, px, py, rng)

  du, dv = (px - cx) / radius, (py - cy) / radius
  u = np.cos(angle) * du + np.sin(angle) * dv
  v = -np.sin(angle) * du + np.cos(angle) * dv
  inside = shape_mask(scene.shape, u, v)
  outline = _dilate(inside, SUPERSAMPLE - 1) & ~inside
  base = np.asarray(RGB[scene.colour])
  fill = np.where(texture_mask(scene.texture, px, py, phase)[..., None], base * 0.42, base)
  img = np.where(outline[..., None], 0.06, img)
  img = np.where(inside[..., None], fill, img)
  if scene.has_face:
    img = _draw_face(img, u, v, scene.shape)

  img = img.reshape(SIZE, SUPERSAMPLE, SIZE, SUPERSAMPLE, 3).mean(axis=(1, 3))
  return (img * 2.0 - 1.0).astype(np.float32)


# Eye height per shape in unit coordinates: where the shape is wide enough for two eyes.
_EYE_V = {"circle": -0.2, "square": -0.2, "triangle": 0.3, "star": 0.0, "heart": -0.15,
          "cross": -0.05}


def _draw_face(img, u, v, shape):
  """Two white eyes with dark pupils: what makes a shape a character."""
  ev = _EYE_V[shape]
  for eu in (-0.38, 0.38):
    d2 = (u - eu) ** 2 + (v - ev) ** 2
    img = np.where((d2 <= 0.27 ** 2)[..., None], 1.0, img)
    img = np.where((d2 <= 0.13 ** 2)[..., None], 0.0, img)
  return img


def render_batch(scenes) -> np.ndarray:
  """(N, SIZE, SIZE, 3) float32 in [-1, 1]."""
  return np.stack([render(s) for s in scenes])


def save_grid(images: np.ndarray, path: str, columns: int = 8, scale: int = 4) -> None:
  """Write images in [-1, 1] as one PNG grid (nearest-neighbour upscaled) for eyeballing."""
  import matplotlib.pyplot as plt
  n = len(images)
  rows = -(-n // columns)
  grid = np.ones((rows * (SIZE + 2), columns * (SIZE + 2), 3), np.float32)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    y, x = r * (SIZE + 2), c * (SIZE + 2)
    grid[y:y + SIZE, x:x + SIZE] = image * 0.5 + 0.5
  grid = np.kron(np.clip(grid, 0, 1), np.ones((scale, scale, 1)))
  plt.imsave(path, grid)
