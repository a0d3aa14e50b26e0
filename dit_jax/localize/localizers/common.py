"""What the intervention localizers share: judged presence per run, and block edits in one
vmapped, compiled call per chunk (the pipeline keeps the program, Text2Image.program)."""
from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from dit_jax import blocks
from dit_jax.models.interventions import BlockEdit
from dit_jax.knowledge import PromptPair
from dit_jax.localize.sweep import in_chunks, pipe_noise
from dit_jax.models.variants import VARIANTS
from dit_jax.localize.records import ScoreRecord


def require_judge(judge, name: str) -> None:
  if judge is None:
    raise ValueError(f"the {name!r} localizer judges images for the concept's presence: pass the "
                     "run's judge (score(..., judge=judge))")


def expanded(pairs: Sequence[PromptPair], seeds: Sequence[int]) -> list[PromptPair]:
  """One pair per image: rows are prompt-major (prompt i, seed j at i * len(seeds) + j)."""
  return [p for p in pairs for _ in seeds]


def presence(judge, images: np.ndarray, pairs: Sequence[PromptPair], seeds: Sequence[int]):
  """(runs,) the judge's mean presence of each pair's concept in each run's images (runs, N, ...)."""
  rows = expanded(pairs, seeds)
  return np.array([float(np.mean(judge.presence(imgs, rows))) for imgs in images])


def record(name: str, pairs, seeds, pipe, scores, presence_per_block, baseline,
           **extra) -> ScoreRecord:
  """A single-score localizer's record: its scores under every variant (see localizers)."""
  scores = [float(s) for s in scores]
  return ScoreRecord(category=pairs[0].category, **{v: list(scores) for v in VARIANTS},
                     per_step_with_wo=[], num_prompts=len(pairs), num_seeds=len(seeds),
                     num_steps=pipe.num_steps, localizer=name,
                     presence=[float(p) for p in presence_per_block], baseline=float(baseline),
                     **extra)


def single_block_masks(num_blocks: int) -> np.ndarray:
  """(1 + num_blocks, num_blocks): no block (the baseline), then each block alone."""
  return blocks.masks([(), *((b,) for b in range(num_blocks))], num_blocks)


def block_edit_sweep(loop):
  """fn(params, noise, cond, bypass, patch, source) -> final latents (I, B, ...): `loop` once per
  edit, vmapped over the masks (I, blocks); weights, noise and text are arguments."""
  def sweep(params, noise, cond, bypass, patch, source):
    run = lambda b, p: loop(params, noise, {**cond, "block_edit": BlockEdit(b, p, source)})
    return jax.vmap(run)(bypass, patch)
  return sweep


def run_block_edits(pipe, prompts: Sequence[str], seeds: Sequence[int], size: tuple[int, int],
                    bypass: np.ndarray, patch: np.ndarray, chunk: int,
                    restore_from: Sequence[str] | None = None) -> np.ndarray:
  """uint8 images (I, len(prompts) * len(seeds), H, W, 3) of `prompts` under each edit.

  bypass, patch: (I, blocks) masks. restore_from: the prompts (one per prompt) whose run, from the
  same noise in the same batch, patched blocks take their output from; that run is never edited.
  """
  height, width = size
  shape = pipe.latent_shape(height, width)
  sweep = pipe.program(("block_edit", shape), lambda: block_edit_sweep(pipe.loop(shape)))
  rows = [(p, s) for p in prompts for s in seeds]
  n = len(rows)
  cond = pipe.conditioning([p for p, _ in rows], height, width)
  noise = np.asarray(pipe_noise(pipe, [s for _, s in rows], size))
  source = np.arange(n)
  if restore_from is not None:
    if len(restore_from) != len(prompts):
      raise ValueError(f"{len(prompts)} prompts but {len(restore_from)} to restore from")
    other = pipe.conditioning([p for p in restore_from for _ in seeds], height, width)
    cond = {k: np.concatenate([v, other[k]]) for k, v in cond.items()}
    noise = np.concatenate([noise, noise])
    source = np.concatenate([np.arange(n) + n, np.arange(n) + n])   # the other run: its own rows
  # Every edit reads the same noise and text; the edits are the rows a mesh splits.
  noise, cond, source = pipe.shared((noise, cond, np.asarray(source, np.int32)))
  call = lambda index: sweep(pipe.weights(), noise, cond, *pipe.split_rows((bypass[index], patch[index])),
                             source)
  # Rows beyond n are the restoring run's: only the edited run's images are decoded.
  return np.stack([pipe.decode(lat[:n])
                   for lat in in_chunks(call, len(bypass), chunk, pipe.device_count)])
