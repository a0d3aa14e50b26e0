"""Data-parallel + FSDP sharding of the training state and batches over a device mesh.

    mesh = sharding.make_mesh(fsdp=4)              # axes ("data", "fsdp"); data = devices / fsdp
    state = sharding.shard_state(state, mesh)      # params, Adam moments and EMA split over "fsdp"
    frozen = sharding.shard_params(frozen, mesh)
    batch = sharding.shard_batch(batch, mesh)      # examples split over data x fsdp

training.make_train_step then compiles for these shardings: XLA gathers each parameter where it
is used and reduce-scatters its gradient (the FSDP pattern), so per-device parameter, gradient and
optimizer memory shrinks with the fsdp axis while the data axis adds throughput. One device is the
mesh (1, 1) and changes nothing.

Multi-host: call jax.distributed.initialize() on every host first (coordinator address, process
count and id, or the cluster's auto-detection); jax.devices() then lists every host's devices and
make_mesh spans them all. Each host loads its own slice of the global batch and builds the global
array with jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch).

Localization uses the same mesh on one host's devices (local_mesh): weights placed by shard_params
(replicated, or split over "fsdp"), the rows of a sweep (interventions) or of a scoring batch split
by shard_batch, what every row shares replicated; the jitted programs follow their inputs'
shardings. Hosts split the concepts instead (dit_jax/localize/job.py), so no program spans hosts.

On a CPU-only machine localize.py and generate.py first ask XLA for one single-threaded device per
core (one_cpu_device_per_core): XLA's CPU backend otherwise runs one device and spreads each op
over every core, and the Shapes model's ops are too small to gain from that (a block's largest
matmul is 2,048 x 96 x 384 at 16 images). Two single-threaded devices, each sampling half of a
sweep's interventions, ran the default localization run in 195 s against 254 s on one device over
both cores, every result JSON identical. DIT_JAX_CPU_DEVICES sets it: "auto" (the default) where
nothing else decides; a number N gives N devices; 0 or 1 leaves XLA as it is.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


AXES = ("data", "fsdp")


def make_mesh(fsdp: int = 1, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  if fsdp < 1 or len(devices) % fsdp:
    raise ValueError(f"fsdp={fsdp} must divide the {len(devices)} devices")
  return Mesh(np.array(devices).reshape(len(devices) // fsdp, fsdp), AXES)


def local_mesh(num_devices: int = 0, fsdp: int = 1) -> Mesh:
  """make_mesh over this process's devices: the first num_devices (0: every one). A host of a
  multi-host run sees only its own (jax.local_devices), as its programs must."""
  local = jax.local_devices()
  if not 0 <= num_devices <= len(local):
    raise ValueError(f"num_devices={num_devices}: this process has {len(local)} devices "
                     f"({local[0].platform}); give 1..{len(local)}, or 0 for all of them")
  return make_mesh(fsdp, local[:num_devices or None])


def replicate(tree, mesh: Mesh):
  """Every array of `tree` on every device of the mesh (what all rows of a sweep share)."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def param_spec(shape: tuple[int, ...], fsdp: int) -> P:
  """Split the largest dimension that the fsdp size divides; small or indivisible arrays replicate."""
  if fsdp == 1 or not shape:
    return P()
  candidates = [i for i, d in enumerate(shape) if d % fsdp == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: shape[i])
  return P(*(["fsdp" if i == axis else None for i in range(len(shape))]))


def shard_params(tree, mesh: Mesh):
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(
      lambda x: jax.device_put(x, NamedSharding(mesh, param_spec(np.shape(x), fsdp))), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXES))


def shard_batch(batch, mesh: Mesh):
  """Every array of a batch tree (nested dicts: x0, cond, prior, anchor) split by rows."""
  devices = mesh.devices.size
  for path, x in jax.tree_util.tree_leaves_with_path(batch):
    if np.shape(x)[0] % devices:
      raise ValueError(f"batch{jax.tree_util.keystr(path)} has {np.shape(x)[0]} rows; the mesh needs "
                       f"a multiple of its {devices} devices")
  return jax.tree_util.tree_map(lambda x: jax.device_put(x, batch_sharding(mesh)), batch)


# ----------------------------------------------------------------- one device per core on a CPU
CPU_DEVICES_ENV = "DIT_JAX_CPU_DEVICES"
COUNT_FLAG = "--xla_force_host_platform_device_count"
THREADS_FLAG = "--xla_cpu_multi_thread_eigen"
# JAX plugins for accelerators: where one is installed the model runs there, not on these devices.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def one_cpu_device_per_core(environ=None, cores: int | None = None) -> int | None:
  """Put the flags for `cores` single-threaded CPU devices (default: the cores this process may run
  on) into XLA_FLAGS, before JAX starts (module docstring; docs/design.md, "Speed": one device per
  core). Returns that count, or None where it changes nothing:
  DIT_JAX_CPU_DEVICES is 0 or 1, XLA_FLAGS already names either flag (the user's choice wins), an
  accelerator plugin is installed (unless DIT_JAX_CPU_DEVICES gives a count), one core, or JAX's
  backends have already started (the flags are read once, at that start)."""
  environ = os.environ if environ is None else environ
  wanted = environ.get(CPU_DEVICES_ENV, "auto").strip().lower()
  if wanted != "auto" and not wanted.isdigit():
    raise ValueError(f"{CPU_DEVICES_ENV}={wanted!r}: give 'auto' or a number of CPU devices "
                     "(0 or 1: XLA's own)")
  flags = environ.get("XLA_FLAGS", "")
  if COUNT_FLAG in flags or THREADS_FLAG in flags or backends_started():
    return None
  if wanted == "auto":
    if any(importlib.util.find_spec(name) for name in ACCELERATOR_PLUGINS):
      return None
    count = cores if cores is not None else len(os.sched_getaffinity(0))
  else:
    count = int(wanted)
  if count <= 1:
    return None
  environ["XLA_FLAGS"] = f"{flags} {COUNT_FLAG}={count} {THREADS_FLAG}=false".strip()
  return count


def backends_started() -> bool:
  """Whether JAX has started its backends (and read XLA_FLAGS); jax has no public way to ask."""
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()
