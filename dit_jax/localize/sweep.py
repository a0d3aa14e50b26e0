"""Localization (which blocks carry a concept) and its causal validation (block interventions).

    scores = concept_scores(pipe, prompts, concepts, seeds, size)        # (N, steps, blocks, V)
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
import math
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dit_jax.verdict import exact
from dit_jax import blocks, families
from dit_jax.models.interventions import ConceptProbe


def _batches(n: int, size: int):
  for start in range(0, n, size):
    yield slice(start, min(start + size, n))


def concept_scores(pipe, prompts: Sequence[str], concepts: Sequence[str], seeds: Sequence[int],
                   size: tuple[int, int], batch_size: int = 8) -> np.ndarray:
  """(len(prompts) * len(seeds), steps, blocks, V) attention contributions of each concept's tokens,
  V = len(variants.VARIANTS), in that order.

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
  from dit_jax.diffusion.denoise import noise_for_seeds
  return noise_for_seeds(seeds, pipe.latent_shape(*size))


class TimeWindow(NamedTuple):
  """Sampling steps [start, end) of the schedule (step 0 is the noisiest) an intervention acts on."""
  name: str
  start: int
  end: int


# Named windows: thirds of the schedule (np.array_split's: 20 steps -> 7, 7, 6).
WINDOW_NAMES = ("early", "middle", "late")


def time_windows(names: Sequence[str], num_steps: int) -> list[TimeWindow]:
  """The windows config.time_windows names: "early", "middle", "late" (thirds of the schedule) or
  "start:end" (steps start..end-1, e.g. "0:5")."""
  thirds = dict(zip(WINDOW_NAMES, np.array_split(np.arange(num_steps), 3)))
  windows = []
  for name in names:
    if name in thirds:
      steps = thirds[name]
      if not len(steps):
        raise ValueError(f"time window {name!r}: {num_steps} sampling steps have no {name} third")
      windows.append(TimeWindow(name, int(steps[0]), int(steps[-1]) + 1))
      continue
    start, colon, end = str(name).partition(":")
    if not (colon and start.isdigit() and end.isdigit() and int(start) < int(end) <= num_steps):
      raise ValueError(f"time window {name!r}: use {list(WINDOW_NAMES)} (thirds of the schedule) or "
                       f"'start:end' with 0 <= start < end <= {num_steps} sampling steps")
    windows.append(TimeWindow(name, int(start), int(end)))
  if len({w.name for w in windows}) != len(windows):
    raise ValueError(f"time windows {list(names)} name a window twice")
  return windows


@dataclasses.dataclass(frozen=True)
class Intervention:
  """Blocks whose cross-attention text input is swapped. Default: the concept prompt everywhere but
  the neutral prompt in `blocks`. reverse: the neutral prompt everywhere but the concept in `blocks`.
  window: only on these sampling steps (the original text outside them); None: every step."""
  kind: str     # none | top | bottom | random | depth_random | single | reverse | reverse_random | neutral | all
  k: int
  blocks: tuple[int, ...]
  draw: int = 0
  reverse: bool = False
  window: TimeWindow | None = None
  null: str = ""   # random sets: "exact" (every K-set is swept), "sampled" (drawn without replacement)

  @property
  def name(self) -> str:
    when = f" @{self.window.name}" if self.window else ""
    if self.kind in ("none", "neutral"):
      return {"none": "original", "neutral": "neutral prompt"}[self.kind] + when
    if self.kind == "single":
      return f"block {self.blocks[0]}{when}"
    if self.kind == "all":
      return f"all blocks{when}"
    drawn = self.kind in ("random", "reverse_random", "depth_random")
    return f"{self.kind.replace('_', '-')}-{self.k}" + (f" #{self.draw}" if drawn else "") + when


def concept_seed(seed: int, concept: str) -> list[int]:
  """A seed sequence for `concept`'s random draws: reproducible across processes (crc32, not
  Python's salted hash) and different for every concept."""
  return [int(seed), zlib.crc32(concept.encode("utf-8"))]


def draw_random_sets(ranking: np.ndarray, k: int, draws: int, seed: Sequence[int],
                     overlap: bool = True) -> list[tuple[int, ...]]:
  """`draws` independent, uniformly random K-block sets (with replacement between draws: a set may
  come twice). Independence is what makes them a sample of the null distribution of K-block sets,
  which the verdict ranks the top-K in (dit_jax/verdict/sets.py; docs/design.md, "Verdict"). The pool is
  every block (overlap=True: a draw may share blocks with the top-K) or the blocks outside it."""
  n = len(ranking)
  pool = np.arange(n) if overlap else np.sort(np.asarray(ranking[k:]))
  if k > len(pool):
    raise ValueError(f"K={k}: random draws outside the top-{k} need {k} of the {len(pool)} other "
                     "blocks; use random_overlap=True or a smaller K")
  rng = np.random.default_rng([*seed, k])   # K in the seed: adding a K to the grid keeps the others
  return _independent_sets(rng, pool, k, draws)


def draw_distinct_sets(num_blocks: int, k: int, draws: int, seed: Sequence[int]) -> list[tuple[int, ...]]:
  """`draws` different K-block sets, uniformly without replacement among all C(n, K) (every set
  where draws >= C(n, K)): the sampled null of dit_jax/verdict/exact.py, where no set is counted twice."""
  total = math.comb(num_blocks, k)
  rng = np.random.default_rng([*seed, k])
  if draws >= total:
    return exact.all_sets(num_blocks, k)
  chosen: dict[tuple[int, ...], None] = {}
  while len(chosen) < draws:   # rejection: draws << C(n, K) wherever this branch runs
    chosen.setdefault(tuple(sorted(int(b) for b in rng.choice(num_blocks, k, replace=False))))
  return list(chosen)


def _independent_sets(rng: np.random.Generator, pool, k: int, draws: int) -> list[tuple[int, ...]]:
  return [tuple(sorted(int(b) for b in rng.choice(pool, k, replace=False))) for _ in range(draws)]


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
    parts.append(_independent_sets(rng, pool, count, draws))
  return [tuple(sorted(b for part in chosen for b in part)) for chosen in zip(*parts)], overlap


def plan_interventions(ranking: np.ndarray, ks: Sequence[int], random_draws: int = 20,
                       seed: int = 0, single_blocks: bool = False, reverse: bool = True,
                       concept: str = "", random_overlap: bool = True,
                       reverse_draws: int | None = None,
                       depth_draws: int = 0, exact_limit: int | None = None) -> list[Intervention]:
  """The sweep: K=0 (the original) and, with reverse, the neutral prompt everywhere; for each K
  top-K, bottom-K, `random_draws` random-K sets, `depth_draws` depth-matched random-K sets
  (draw_depth_matched_sets), and with reverse the top-K reverse and `reverse_draws` (default: all)
  reverse runs on the first random-K sets; plus every single block when asked. Random sets are
  drawn per concept, reproducibly from (seed, concept, K).

  exact_limit (dit_jax/verdict/exact.py): where C(n, K) <= exact_limit the random sets are every K-block
  set (null "exact", draw = the set's lexicographic index); above it, `random_draws` different
  sets (null "sampled"). None: the earlier null, independent draws with replacement (stored runs
  were made with it)."""
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
    null = "" if exact_limit is None else "exact" if exact.is_exact(n, k, exact_limit) else "sampled"
    if null == "exact":
      drawn = exact.all_sets(n, k)
    elif null == "sampled":
      drawn = draw_distinct_sets(n, k, random_draws, concept_seed(seed, concept))
    else:
      drawn = draw_random_sets(ranking, k, random_draws, concept_seed(seed, concept), random_overlap)
    plan += [Intervention("random", k, blocks, d, null=null) for d, blocks in enumerate(drawn)]
    if depth_draws:
      matched, _ = draw_depth_matched_sets(ranking, k, depth_draws, concept_seed(seed, concept))
      plan += [Intervention("depth_random", k, blocks, d) for d, blocks in enumerate(matched)]
    if reverse:
      plan.append(Intervention("reverse", k, top, reverse=True))
      backward = drawn if reverse_draws is None else drawn[:reverse_draws]
      if null == "exact" and reverse_draws is not None and reverse_draws < len(drawn):
        # Every set is swept in lexicographic order; the reverse's sample must not be its start.
        order = np.random.default_rng([*concept_seed(seed, concept), k, 1]).permutation(len(drawn))
        backward = [drawn[i] for i in sorted(order[:reverse_draws])]
      plan += [Intervention("reverse_random", k, blocks, d, reverse=True)
               for d, blocks in enumerate(backward)]
  if single_blocks:
    plan += [Intervention("single", 1, (b,)) for b in range(n)]
  return plan


def plan_windows(ranking: np.ndarray, ks: Sequence[int], windows: Sequence[TimeWindow],
                 single_blocks: bool = False) -> list[Intervention]:
  """Interventions limited to each time window: top-K for each K and every block at once (what the
  window alone can do), plus every single block when asked (the windows x blocks map)."""
  n = len(ranking)
  plan = []
  for window in windows:
    plan += [Intervention("top", k, tuple(sorted(int(b) for b in ranking[:k])), window=window)
             for k in ks]
    plan.append(Intervention("all", n, tuple(range(n)), window=window))
    if single_blocks:
      plan += [Intervention("single", 1, (b,), window=window) for b in range(n)]
  return plan


def step_windows(plan: Sequence[Intervention]) -> np.ndarray | None:
  """(len(plan), 2) int32 [start, end) per intervention (every step where it has no window), or None
  when no intervention has a window: the sweep then runs without any (sampling.denoise)."""
  if not any(i.window for i in plan):
    return None
  every = (0, np.iinfo(np.int32).max)
  return np.array([(i.window.start, i.window.end) if i.window else every for i in plan], np.int32)


def run_interventions(pipe, prompts: Sequence[str], neutral_prompts: Sequence[str] | dict,
                      seeds: Sequence[int], size: tuple[int, int], plan: Sequence[Intervention],
                      chunk: int = 8, **options) -> np.ndarray:
  """uint8 images (len(plan), len(prompts) * len(seeds), H, W, 3), rows prompt-major as above.

  Each chunk of interventions is one jitted call, vmapped over block masks, the reverse flag and
  (where any intervention has one) the step window: the conditional branch reads `base` text in
  unselected blocks and `swap` text in selected ones, the unconditional branch is never touched,
  and every intervention starts from the same noise. neutral_prompts: what the selected blocks read
  instead of the concept, one per prompt: prompts, or a conditioning dict with one row per prompt
  (dit_jax.localize.withhold: the mean text state). `options` go to the family's intervention (FLUX's
  swap_pooled: an intervention that selects any block also takes the other prompt's pooled CLIP
  vector, which reaches every block through the modulation; report it separately).
  """
  # The null of K-block sets is drawn with replacement, and top-, bottom- and drawn sets can
  # coincide: each distinct intervention is sampled once (every one starts from the same noise, so
  # a repeat would give the same images) and its images are given to every row that asked for it.
  keys = [(i.blocks, i.reverse, i.window) for i in plan]
  distinct = list(dict.fromkeys(keys))
  if len(distinct) < len(plan):
    first = {key: i for key, i in zip(keys, plan)}
    found = run_interventions(pipe, prompts, neutral_prompts, seeds, size,
                              [first[key] for key in distinct], chunk, **options)
    computed = dict(zip(distinct, found))
    return np.stack([computed[key] for key in keys])
  given = len(next(iter(neutral_prompts.values()))) if isinstance(neutral_prompts, dict) else len(neutral_prompts)
  if len(prompts) != given:
    raise ValueError(f"{len(prompts)} prompts but {given} neutral prompts")
  windows = step_windows(plan)
  if windows is not None and options.get("swap_pooled"):
    raise ValueError("swap_pooled with a time window: the pooled vector reaches every step through "
                     "the modulation, so it cannot be limited to a window; run windows without it")
  height, width = size
  shape = pipe.latent_shape(height, width)
  sweep = pipe.program(("sweep", shape, tuple(sorted(options.items()))),
                       lambda: intervention_sweep(pipe.family, pipe.loop(shape), **options))
  rows = [(p, s) for p in prompts for s in seeds]
  ps, ss = zip(*rows)
  noise = pipe_noise(pipe, ss, size)
  concept = pipe.conditioning(ps, height, width)
  if isinstance(neutral_prompts, dict):   # one row per prompt -> one per (prompt, seed)
    neutral = {k: np.repeat(np.asarray(v), len(seeds), axis=0) for k, v in neutral_prompts.items()}
  else:
    neutral = pipe.conditioning([n for n in neutral_prompts for _ in seeds], height, width)
  # Every intervention reads the same noise and text (on every device of a mesh); the
  # interventions are the rows a mesh splits (pipe.split_rows).
  noise, concept, neutral = pipe.shared((noise, concept, neutral))

  masks = blocks.masks([i.blocks for i in plan], pipe.module.config.num_blocks)
  reverse = np.array([i.reverse for i in plan])
  call = lambda index: sweep(pipe.weights(), noise, concept, neutral, *pipe.split_rows(
      (masks[index], reverse[index], None if windows is None else windows[index])))
  return np.stack([pipe.decode(lat) for lat in in_chunks(call, len(plan), chunk, pipe.device_count)])


def in_chunks(call, count: int, chunk: int, devices: int = 1) -> list[np.ndarray]:
  """[call(index) per row] for `count` rows of a vmapped program, run `chunk` rows per device at a
  time: call(index) takes an int array of row indices and returns (len(index), ...) results.

  As few calls as `chunk` allows, evened out so that the last one pads the least; the last chunk
  is padded (its final row repeated) to full size, so every call reuses one compilation. With
  several devices (a mesh splitting the rows) a call runs up to chunk * devices rows, a multiple
  of `devices`, so every device gets as many.
  """
  if chunk < 1 or devices < 1:
    raise ValueError(f"chunk={chunk}, devices={devices}: both must be at least 1")
  calls = -(-count // (chunk * devices))
  chunk = -(-count // calls)
  chunk = -(-chunk // devices) * devices
  out = []
  for part in _batches(count, chunk):
    index = np.arange(part.start, part.start + chunk).clip(max=part.stop - 1)
    out += list(np.asarray(call(index), np.float32)[:part.stop - part.start])
  return out


def intervention_sweep(family: str, loop, **options):
  """fn(params, noise, concept, neutral, masks, reverse, windows=None) -> final latents (I, N, ...):
  the denoising `loop` (Text2Image.loop) run once per intervention, vmapped over the block masks
  (I, blocks), reverse flags (I,) and, if given, step windows (I, 2) int32 [start, end) outside which
  the intervention is off (the loop's cond carries it as "step_window", sampling.denoise). Weights,
  noise and text states are arguments, so jitting it bakes no model into the program and one
  compilation serves every chunk. `options` go to the family's intervention (FLUX: swap_pooled)."""
  fam = families.get(family)
  for name, value in options.items():
    if name not in fam.intervention_options:
      owners = [f.title for f in map(families.get, families.names()) if name in f.intervention_options]
      raise ValueError(f"{name} is {' and '.join(owners) or 'no family'}'s option; {fam.title} "
                       f"interventions take {sorted(fam.intervention_options) or 'none'}")
    if value not in fam.intervention_options[name]:
      raise ValueError(f"{name}={value!r}: use one of {sorted(fam.intervention_options[name])}")

  def sweep(params, noise, concept, neutral, masks, reverse, windows=None):
    def run(mask, rev, window=None):
      # The window rides in the cond the family's intervention hands to the loop: no family sees it.
      timed = loop if window is None else (
          lambda p, x, cond: loop(p, x, {**cond, "step_window": window}))
      return fam.intervene(timed, params, noise, concept, neutral, mask, rev, **options)
    if windows is None:
      return jax.vmap(run)(masks, reverse)
    return jax.vmap(run)(masks, reverse, windows)
  return sweep
