"""Localization (which blocks carry a concept) and its causal validation (block interventions).

    scores = concept_scores(pipe, prompts, concepts, seeds, size)        # (N, steps, blocks, 2)
    ranking = rank_blocks(scores.mean(axis=(0, 1))[:, variant])
    plan = plan_interventions(ranking, ks=[2, 4], random_draws=5)
    images = run_interventions(pipe, prompts, neutral_prompts, seeds, size, plan)

Scores come out of the attention as values (docs/design.md, "The method"); interventions are data (block
masks) fed to one jitted, vmapped sampling call per chunk of interventions, so a whole sweep (every
single block, top-K for several K, random-K draws, bottom-K, the reverse experiment) shares one
compilation.
"""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax import families
from dit_jax.interventions import ConceptProbe



def resolve_k(k: float, num_blocks: int) -> int:
  """K as a count (k >= 1) or a fraction of the blocks (0 <= k < 1), as the paper sweeps 10/30/50 %."""
  if k < 0 or k > num_blocks:
    raise ValueError(f"K={k} is outside [0, {num_blocks}] blocks")
  return int(round(k * num_blocks)) if k < 1 else int(k)


def rank_blocks(block_scores: np.ndarray) -> np.ndarray:
  """Block indices from the largest score to the smallest (ties keep block order)."""
  return np.argsort(-np.asarray(block_scores), kind="stable")


def _batches(n: int, size: int):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def concept_scores(pipe, prompts: Sequence[str], concepts: Sequence[str], seeds: Sequence[int],
                   size: tuple[int, int], batch_size: int = 8) -> np.ndarray:
  """(len(prompts) * len(seeds), steps, blocks, 2) attention contributions of each concept's tokens.

  Rows are prompt-major (prompt i, seed j at i * len(seeds) + j). The concept's token positions come
  from the tokenizer that feeds the attention (offset mappings); a concept absent from its prompt
  raises ConceptNotFound naming both.
  """
  height, width = size
  jobs = [(p, c, s) for p, c in zip(prompts, concepts) for s in seeds]
  out = []
  for batch in _batches(len(jobs), batch_size):
    ps, cs, ss = zip(*jobs[batch])
    cond = pipe.conditioning(ps, height, width)
    cond["concept"] = ConceptProbe(pipe.encoder.concept_mask(ps, cs))
    noise = pipe_noise(pipe, ss, size)
    _, scores = pipe.denoise(noise, jax.tree_util.tree_map(jnp.asarray, cond))
    out.append(np.asarray(scores, np.float32).transpose(1, 0, 2, 3))   # steps-major -> row-major
  return np.concatenate(out)


def pipe_noise(pipe, seeds, size):
  from dit_jax.sampling import noise_for_seeds
  return noise_for_seeds(seeds, pipe.latent_shape(*size))


@dataclasses.dataclass(frozen=True)
class Intervention:
  """Blocks whose cross-attention text input is swapped. Default: the concept prompt everywhere but
  the neutral prompt in `blocks`. reverse: the neutral prompt everywhere but the concept in `blocks`."""
  kind: str     # none | top | bottom | random | depth_random | single | reverse | reverse_random | neutral
  k: int
  blocks: tuple[int, ...]
  draw: int = 0
  reverse: bool = False

  @property
  def name(self) -> str:
    if self.kind in ("none", "neutral"):
      return {"none": "original", "neutral": "neutral prompt"}[self.kind]
    if self.kind == "single":
      return f"block {self.blocks[0]}"
    drawn = self.kind in ("random", "reverse_random", "depth_random")
    return f"{self.kind.replace('_', '-')}-{self.k}" + (f" #{self.draw}" if drawn else "")


def concept_seed(seed: int, concept: str) -> list[int]:
  """A seed sequence for `concept`'s random draws: reproducible across processes (crc32, not
  Python's salted hash) and different for every concept."""
  return [int(seed), zlib.crc32(concept.encode("utf-8"))]


def draw_random_sets(ranking: np.ndarray, k: int, draws: int, seed: Sequence[int],
                 overlap: bool = True) -> list[tuple[int, ...]]:
  """`draws` random K-block sets. Each set is the next K blocks of a random permutation of the pool
  (a fresh permutation when fewer than K are left), so every block is drawn about equally often:
  independent draws of a few sets can all share one block and skew the control. The pool is every
  block (overlap=True: a draw may share blocks with the top-K) or the blocks outside the top-K."""
  n = len(ranking)
  pool = np.arange(n) if overlap else np.sort(np.asarray(ranking[k:]))
  if k > len(pool):
    raise ValueError(f"K={k}: random draws outside the top-{k} need {k} of the {len(pool)} other "
                     "blocks; use random_overlap=True or a smaller K")
  rng = np.random.default_rng([*seed, k])   # K in the seed: adding a K to the grid keeps the others
  return _balanced_sets(rng, pool, k, draws)


def _balanced_sets(rng: np.random.Generator, pool, k: int, draws: int) -> list[tuple[int, ...]]:
  """`draws` K-block sets from `pool`, each the next K blocks of a random permutation of it."""
  sets, order = [], []
  while len(sets) < draws:
    if len(order) < k:
      order = list(rng.permutation(pool))
    sets.append(tuple(sorted(int(b) for b in order[:k])))
    order = order[k:]
  return sets


def depth_thirds(num_blocks: int) -> list[np.ndarray]:
  """Early, middle and late blocks: the block indices split into three runs (the first ones one
  block longer where the count does not divide). FLUX's double and single blocks are numbered in
  one sequence and split the same way."""
  return np.array_split(np.arange(num_blocks), 3)


DEPTH_STREAM = 3   # any constant: it only separates the depth-matched stream from random-K's


def draw_depth_matched_sets(ranking: np.ndarray, k: int, draws: int,
                            seed: Sequence[int]) -> tuple[list[tuple[int, ...]], bool]:
  """`draws` random K-block sets with the top-K's depth profile (docs/design.md, "Statistics"):
  from each third of the blocks (depth_thirds) as many blocks as the top-K has there, drawn
  outside the top-K where the third has that many other blocks, else from the whole third.
  Returns the sets and whether any third had to overlap the top-K. Reproducible per (seed, K) and
  on a stream of its own: adding depth draws leaves the random-K draws as they were."""
  top = set(int(b) for b in ranking[:k])
  rng = np.random.default_rng([*seed, k, DEPTH_STREAM])
  parts, overlap = [], False
  for third in depth_thirds(len(ranking)):
    count = sum(int(b) in top for b in third)
    if not count:
      continue
    others = np.array([b for b in third if int(b) not in top])
    crowded = len(others) < count   # e.g. K=4 with all of the top-K in a third of 4 blocks
    overlap = overlap or crowded
    pool = third if crowded else others
    parts.append(_balanced_sets(rng, pool, count, draws))
  return [tuple(sorted(b for part in chosen for b in part)) for chosen in zip(*parts)], overlap



def plan_interventions(ranking: np.ndarray, ks: Sequence[int], random_draws: int = 20,
                       seed: int = 0, single_blocks: bool = False, reverse: bool = True,
                       concept: str = "", random_overlap: bool = True,
                       reverse_draws: int | None = None,
                       depth_draws: int = 0) -> list[Intervention]:
  """The sweep: K=0 (the original) and, with reverse, the neutral prompt everywhere; for each K
  top-K, bottom-K, `random_draws` random-K sets, `depth_draws` depth-matched random-K sets
  (draw_depth_matched_sets), and with reverse the top-K reverse and `reverse_draws` (default: all)
  reverse runs on the first random-K sets; plus every single block when asked. Random sets are
  drawn per concept, reproducibly from (seed, concept, K)."""
  n = len(ranking)
  if reverse_draws is not None and not 0 <= reverse_draws <= random_draws:
    raise ValueError(f"reverse_draws={reverse_draws}: the reverse runs use the first of the "
                     f"{random_draws} random-K sets, so it must be in 0..{random_draws}")
  if depth_draws < 0:
    raise ValueError(f"depth_draws={depth_draws}: give a count of depth-matched draws (0: none)")
  plan = [Intervention("none", 0, ())]
  if reverse:   # the reverse experiment's floor: no block reads the concept
    plan.append(Intervention("neutral", 0, (), reverse=True))
  for k in ks:
    if not 0 < k <= n:
      raise ValueError(f"K={k} must be in 1..{n}")
    top = tuple(sorted(int(b) for b in ranking[:k]))
    plan.append(Intervention("top", k, top))
    plan.append(Intervention("bottom", k, tuple(sorted(int(b) for b in ranking[n - k:]))))
    drawn = draw_random_sets(ranking, k, random_draws, concept_seed(seed, concept), random_overlap)
    plan += [Intervention("random", k, blocks, d) for d, blocks in enumerate(drawn)]
    if depth_draws:
      matched, _ = draw_depth_matched_sets(ranking, k, depth_draws, concept_seed(seed, concept))
      plan += [Intervention("depth_random", k, blocks, d) for d, blocks in enumerate(matched)]
    if reverse:
      plan.append(Intervention("reverse", k, top, reverse=True))
      backward = drawn if reverse_draws is None else drawn[:reverse_draws]
      plan += [Intervention("reverse_random", k, blocks, d, reverse=True)
               for d, blocks in enumerate(backward)]
  if single_blocks:
    plan += [Intervention("single", 1, (b,)) for b in range(n)]
  return plan


def block_mask(plan: Sequence[Intervention], num_blocks: int) -> np.ndarray:
  mask = np.zeros((len(plan), num_blocks), bool)
  for i, intervention in enumerate(plan):
    mask[i, list(intervention.blocks)] = True
  return mask


def run_interventions(pipe, prompts: Sequence[str], neutral_prompts: Sequence[str],
                      seeds: Sequence[int], size: tuple[int, int], plan: Sequence[Intervention],
                      chunk: int = 8, **options) -> np.ndarray:
  """uint8 images (len(plan), len(prompts) * len(seeds), H, W, 3), rows prompt-major as above.

  Each chunk of interventions is one jitted call, vmapped over block masks and the reverse flag:
  the conditional branch reads `base` text in unselected blocks and `swap` text in selected ones,
  the unconditional branch is never touched, and every intervention starts from the same noise.
  `options` go to the family's intervention (FLUX's swap_pooled: an intervention that selects any
  block also takes the other prompt's pooled CLIP vector, which reaches every block through the
  modulation; report it separately).
  """
  if len(prompts) != len(neutral_prompts):
    raise ValueError(f"{len(prompts)} prompts but {len(neutral_prompts)} neutral prompts")
  height, width = size
  shape = pipe.latent_shape(height, width)
  sweep = pipe.program(("sweep", shape, tuple(sorted(options.items()))),
                       lambda: intervention_sweep(pipe.family, pipe.loop(shape), **options))
  rows = [(p, n, s) for p, n in zip(prompts, neutral_prompts) for s in seeds]
  ps, ns, ss = zip(*rows)
  noise = jnp.asarray(pipe_noise(pipe, ss, size))
  concept = jax.tree_util.tree_map(jnp.asarray, pipe.conditioning(ps, height, width))
  neutral = jax.tree_util.tree_map(jnp.asarray, pipe.conditioning(ns, height, width))

  masks = block_mask(plan, pipe.module.config.num_blocks)
  reverse = np.array([i.reverse for i in plan])
  # As few calls as `chunk` allows, evened out so that the last one pads the least.
  calls = -(-len(plan) // chunk)
  chunk = -(-len(plan) // calls)
  images = []
  for part in _batches(len(plan), chunk):
    # The last chunk is padded to full size so that every call reuses one compilation.
    index = np.arange(part.start, part.start + chunk).clip(max=part.stop - 1)
    latents = np.asarray(sweep(pipe.params, noise, concept, neutral, jnp.asarray(masks[index]),
                               jnp.asarray(reverse[index])), np.float32)
    images += [pipe.decode(lat) for lat in latents[:part.stop - part.start]]
  return np.stack(images)


def intervention_sweep(family: str, loop, **options):
  """fn(params, noise, concept, neutral, masks, reverse) -> final latents (I, N, ...): the denoising
  `loop` (Text2Image.loop) run once per intervention, vmapped over the block masks (I, blocks) and
  reverse flags (I,). Weights, noise and text states are arguments, so jitting it bakes no model
  into the program and one compilation serves every chunk. `options` go to the family's
  intervention (FLUX: swap_pooled)."""
  fam = families.get(family)
  for name, value in options.items():
    if name not in fam.intervention_options:
      owners = [f.title for f in map(families.get, families.names()) if name in f.intervention_options]
      raise ValueError(f"{name} is {' and '.join(owners) or 'no family'}'s option; {fam.title} "
                       f"interventions take {sorted(fam.intervention_options) or 'none'}")
    if value not in fam.intervention_options[name]:
      raise ValueError(f"{name}={value!r}: use one of {sorted(fam.intervention_options[name])}")

  def sweep(params, noise, concept, neutral, masks, reverse):
    run = lambda mask, rev: fam.intervene(loop, params, noise, concept, neutral, mask, rev, **options)
    return jax.vmap(run)(masks, reverse)
  return sweep
