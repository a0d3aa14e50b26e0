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
"""
from __future__ import annotations

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
