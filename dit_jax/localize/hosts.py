"""How a localization run is laid out across processes (config.hosts): which share of the concepts
this process takes when several split them (README, "What runs where"); the devices of one process
split each sweep and scoring batch through Text2Image.use_local_devices. Nothing here decides a
result."""
from __future__ import annotations

import os

import jax


def join_processes(hosts) -> None:
  """hosts.distributed: jax.distributed.initialize() (the cluster's own discovery: every host of a
  TPU pod slice, SLURM, ...), so that jax.process_index / process_count say which share of the
  concepts is this host's (process_share). It must come before any computation."""
  if hosts.distributed and not jax.distributed.is_initialized():
    jax.distributed.initialize()


def process_share(hosts) -> tuple[int, int]:
  """(index, count): this process's place among the processes that split the concepts, each
  taking concepts[index::count]. hosts.process_count > 0: independent processes started by hand
  or by a job array, each given its hosts.process_index; 0: jax's (several after
  jax.distributed.initialize, else one)."""
  ours = (jax.process_index(), jax.process_count())
  if not hosts.process_count:
    if hosts.process_index:
      raise ValueError(f"config.hosts.process_index={hosts.process_index} without "
                       "config.hosts.process_count: give both, e.g. --config.hosts.process_index=1 "
                       "--config.hosts.process_count=2")
    return ours
  share = (hosts.process_index, hosts.process_count)
  if not 0 <= share[0] < share[1]:
    raise ValueError(f"config.hosts.process_index={share[0]}: processes are numbered 0..{share[1] - 1} "
                     f"(config.hosts.process_count={share[1]})")
  if ours[1] > 1 and share != ours:
    raise ValueError(f"config.hosts.process_index, process_count = {share}, but jax.distributed runs "
                     f"this as process {ours[0]} of {ours[1]}: leave config.hosts.process_count=0 to "
                     "use jax's")
  return share


def lock_name(hosts) -> str:
  """One run at a time per out_dir, or per share of the concepts where processes split them."""
  if hosts.process_count:
    return f".localize-{hosts.process_index}-of-{hosts.process_count}.lock"
  return ".localize.lock"


def require_results(expected: list[str], out: str) -> None:
  """merge_only computes nothing: every concept's scores (each localizer's) and interventions
  (`expected`, paths) must be on disk, written by the processes of a split."""
  missing = [os.path.relpath(p, out) for p in expected if not os.path.exists(p)]
  if missing:
    raise SystemExit(f"merge_only: {len(missing)} result files are missing in {out}: "
                     f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}. Run every "
                     "process of the split (config.hosts.process_index / process_count) to the end "
                     "first.")
