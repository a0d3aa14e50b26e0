"""A second Shapes judge with no learned parameters: colour, position and place read off the pixels.

    judge = PixelJudge()
    heads = judge.predictions(images_uint8)    # {"colour"|"position"|"place": HeadPrediction}
    heads = judge(images_in_minus1_1)          # the learned classifier's calling convention

Every constant below is the renderer's (dit_jax/shapes/render.py: its colours and centres are
imported; the grounds' colours, written inline in render.background, are restated in place_rgb and
tests/pixel_judge_test.py holds them to it), so this judge shares nothing with the learned one but
the definition of the world. Nothing is fitted to images.

  place     the per-channel median of the 2-pixel border ring (240 pixels; a shape covers at most
            ~20 of them, and the median ignores stars, snow specks and clouds), nearest (RGB) to
            the place's colour at the ring's median depth t = 0.5 (PLACE_RGB).
  shape     every pixel is given the nearest of a palette (_nearest): each colour's fill, the
            segment from its texture tone to its full tone (render: base * 0.42 and base; the box
            filter mixes the two), dark grey (the outline, 0.06, pupils and pixels at least half
            outline), and the decided place's ground at the pixel's row: plain, under a darkening
            detail (grass blades, snow specks) and moved by the image's own ring median (a
            sample's snow may be whiter than the renderer's). The shape is the largest
            4-connected region of pixels that are not ground (fill and outline touch; night's
            stars and stray pixels are islands), holes (eyes) filled.
  colour    the colour most of the shape's bright fill pixels take (shade >= 0.71, halfway between
            the tones: dark shades are near each other and near night and grass; all fill pixels
            vote only where none is bright); probs are those vote shares.
  position  the shape's centroid (pixel centres at i + 0.5, as render.CENTRES) nearest to one of
            render.CENTRES. The renderer jitters the centre by at most 1.2 px per axis and the
            triangle's mass sits 0.22 radius (<= 1.6 px) below it; the nearest-centre boundaries
            are 3.75 px away, so a clean render is never misread.

position and place are decisions, not scores: their probs are one-hot. Shape, texture and character
are left out: telling a star from a cross or a stripe from a dot in a sample takes a model of
shape (the learned judge's job); a character is a look plus a face, so it needs shape and texture.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from dit_jax.localize.judges import Judge, check_images, register_judge
from dit_jax.shapes import render, world
from dit_jax.shapes.classifier import HeadPrediction

CATEGORIES = ("colour", "position", "place")
RING = 2                 # border ring width in pixels (place)
TEXTURE_TONE = 0.42      # render.render: fill = base * 0.42 where the texture's dark tone goes
# render.background's details that darken the ground: grass blades (x 0.8), snow specks (x 0.85).
DETAIL_SHADE = {"the grass": 0.8, "the snow": 0.85}
OUTLINE = 0.06           # render.render: the outline's grey
GREY_MAX = (OUTLINE + 1.0) / 2   # a pixel at least half outline is at most this light


def place_rgb(place: str, t) -> np.ndarray:
  """render.background's colour of `place` at depth t (0 top, 1 bottom) without its details
  (clouds, blades, dunes, stars, specks): (..., 3)."""
  t = np.asarray(t, float)[..., None]
  if place == "the sky":
    return np.array([0.35, 0.62, 0.95]) + t * np.array([0.35, 0.25, 0.05])
  if place == "the grass":
    return np.array([0.30, 0.50, 0.22]) * (1.0 - 0.2 * t)
  if place == "the desert":
    return np.array([0.86, 0.74, 0.50]) + 0.0 * t   # flat: broadcast to t's shape
  if place == "the night":
    return np.array([0.04, 0.05, 0.20]) * (1.0 + 0.5 * t)
  if place == "the snow":
    return np.array([0.92, 0.94, 0.98]) * (1.0 - 0.05 * t)
  raise ValueError(f"unknown place {place!r}; places are {world.PLACES}")


# The ring's median pixel sits at depth ~0.5: its top and bottom rows balance, its sides span t.
PLACE_RGB = np.stack([place_rgb(p, 0.5) for p in world.PLACES])
FULL_TONES = np.array([render.RGB[c] for c in world.COLOURS])
ROW_DEPTH = (np.arange(render.SIZE) + 0.5) / render.SIZE


def ring_median(images: np.ndarray) -> np.ndarray:
  """(N, 3) per-channel median of each image's border ring; images (N, 32, 32, 3) in [0, 1]."""
  ring = np.ones(images.shape[1:3], bool)
  ring[RING:-RING, RING:-RING] = False
  return np.median(images[:, ring], axis=1)


def read_place(median: np.ndarray) -> np.ndarray:
  """(N,) index into world.PLACES of the ring medians' nearest place colour."""
  return np.argmin(((median[:, None] - PLACE_RGB[None]) ** 2).sum(-1), axis=1)


def _nearest(image: np.ndarray, place: int, median: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each pixel's nearest palette entry and, for fills, its shade: ((32, 32) int, (32, 32) float).

  Entries 0..5 are the colours' fills: the segment base * s, s in [TEXTURE_TONE, 1] (the box filter
  mixes a texture's two tones, so a checkered yellow pixel is yellow at s ~ 0.7, not orange).
  Entry 6 is dark grey, (g, g, g) for g in [0, GREY_MAX]: the outline, pupils, and pixels at least
  half outline (an outline pixel half on snow is mid grey, not purple). Then the place's
  background at the pixel's row, the same under a darkening detail, and the same moved by the
  image's own offset from it (ring median - PLACE_RGB: a sample may draw snow whiter than the
  renderer does). Eye whites fall to a light ground or a fill; the shape's mask fills them in.
  """
  base = FULL_TONES                                                   # (6, 3)
  shade = np.clip(image @ base.T / (base ** 2).sum(-1), TEXTURE_TONE, 1.0)   # (32, 32, 6)
  fill_d2 = ((image[:, :, None] - shade[..., None] * base) ** 2).sum(-1)
  grey = np.clip(image.mean(-1, keepdims=True), 0.0, GREY_MAX)
  grey_d2 = ((image - grey) ** 2).sum(-1)[..., None]
  name = world.PLACES[place]
  ground = place_rgb(name, ROW_DEPTH)[:, None]                        # (32, 1, 3)
  grounds = [ground, ground * DETAIL_SHADE.get(name, 1.0), ground + (median - PLACE_RGB[place])]
  ground_d2 = np.stack([((image - g) ** 2).sum(-1) for g in grounds], axis=-1)
  nearest = np.argmin(np.concatenate([fill_d2, grey_d2, ground_d2], axis=-1), axis=-1)
  picked = np.take_along_axis(shade, np.minimum(nearest, len(base) - 1)[..., None], -1)[..., 0]
  return nearest, picked


BACKGROUND = len(world.COLOURS) + 1   # palette entries from here on are background


def shape_pixels(image: np.ndarray, place: int,
                 median: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(mask of the shape (32, 32) bool, palette index, shade) of one image in [0, 1] whose place
  and ring median are given: the largest 4-connected region that is not background, holes
  (eyes) filled."""
  nearest, shade = _nearest(image, place, median)
  regions, count = ndimage.label(nearest < BACKGROUND)
  if count == 0:
    return np.zeros(image.shape[:2], bool), nearest, shade
  sizes = np.bincount(regions.ravel())[1:]
  mask = ndimage.binary_fill_holes(regions == 1 + int(np.argmax(sizes)))
  return mask, nearest, shade


# Shade above which a fill pixel is mostly the full tone: halfway between the two tones.
BRIGHT = (1.0 + TEXTURE_TONE) / 2


def colour_votes(nearest: np.ndarray, shade: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """(len(COLOURS),) vote shares of the shape's fill pixels: the bright ones (dark shades are
  near each other and near night and grass), else all of them, else even."""
  n = len(world.COLOURS)
  fill = mask & (nearest < n)
  for pixels in (fill & (shade >= BRIGHT), fill):
    votes = np.bincount(nearest[pixels], minlength=n)
    if votes.sum():
      return votes / votes.sum()
  return np.full(n, 1.0 / n)


def centroid(mask: np.ndarray) -> np.ndarray:
  """(x, y) of the mask's centre of mass in render's pixel coordinates (pixel i spans [i, i+1))."""
  ys, xs = np.nonzero(mask)
  if xs.size == 0:
    return np.full(2, render.SIZE / 2.0)
  return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


CENTRES = np.array([render.CENTRES[p] for p in world.POSITIONS])


def read_position(xy: np.ndarray) -> int:
  return int(np.argmin(((CENTRES - xy) ** 2).sum(-1)))


def _one_hot(labels: np.ndarray, n: int) -> np.ndarray:
  return np.eye(n)[labels]


@register_judge("shapes_pixels")
class PixelJudge(Judge):
  """The rule-based judge of colour, position and place (module docstring). As a Judge,
  presence = the covered head's probability of the concept; other categories are refused."""

  categories = CATEGORIES

  def version(self) -> str:
    return "dit_jax.shapes.pixel_judge/1"

  def __call__(self, images) -> dict[str, HeadPrediction]:
    """images (N, 32, 32, 3) float in [-1, 1], as the learned classifier takes them."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (render.SIZE, render.SIZE, 3):
      raise ValueError(f"the pixel judge takes (N, {render.SIZE}, {render.SIZE}, 3) images in "
                       f"[-1, 1] (NHWC), got shape {images.shape}")
    unit = np.clip(images * 0.5 + 0.5, 0.0, 1.0)
    medians = ring_median(unit)
    places = read_place(medians)
    colour_probs, positions = [], []
    for image, place, median in zip(unit, places, medians):
      mask, nearest, shade = shape_pixels(image, int(place), median)
      colour_probs.append(colour_votes(nearest, shade, mask))
      positions.append(read_position(centroid(mask)))
    colour_probs, positions = np.array(colour_probs), np.array(positions, int)
    return {
        "colour": HeadPrediction(colour_probs.argmax(-1), colour_probs, world.COLOURS),
        "position": HeadPrediction(positions, _one_hot(positions, len(world.POSITIONS)),
                                   world.POSITIONS),
        "place": HeadPrediction(places, _one_hot(places, len(world.PLACES)), world.PLACES)}

  def predictions(self, images) -> dict[str, HeadPrediction]:
    """The same for uint8 images (N, 32, 32, 3), as pipelines return them."""
    return self(check_images(images).astype(np.float32) / 127.5 - 1.0)

  def _presence(self, images, pairs: Sequence) -> np.ndarray:
    heads = self.predictions(images)
    scores = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
      if pair.category not in CATEGORIES:
        raise ValueError(f"the pixel judge reads only {CATEGORIES}, not {pair.category!r}")
      head = heads[pair.category]
      scores[i] = head.probs[i, head.classes.index(pair.concept)]
    return scores

  def chance(self, category: str) -> float | None:
    return 1.0 / len(world.CONCEPTS[category]) if category in CATEGORIES else None
