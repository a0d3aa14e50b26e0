"""One single-threaded XLA device per core on a CPU-only machine, for the entry points whose work
splits over devices (docs/design.md, "Speed": one device per core).

XLA's CPU backend runs one device and spreads each op over every core. The Shapes model's ops are
small (a block's largest matmul is 2,048 x 96 x 384 at 16 images), so that spreading costs about what it
gains. Two single-threaded devices, each sampling half of a sweep's interventions, ran the
default sweep about 10 % faster than one device on both cores: 14.6-15.8 s against 16.4-18.1 s
for 12 interventions x 16 images on this project's 2-core CPU, with bit-identical images. The
localize job and generate already split their rows over every local device (config.hosts), so
asking XLA for the devices is all it takes.

The flags must be set before JAX starts its backends, so an entry point calls this before it
computes anything. DIT_JAX_CPU_DEVICES sets it: "auto" (the default) gives one device per core
where nothing else decides; a number N gives N devices; 0 or 1 leaves XLA as it is.
"""
from __future__ import annotations

import importlib.util
import os

ENV = "DIT_JAX_CPU_DEVICES"
COUNT_FLAG = "--xla_force_host_platform_device_count"
THREADS_FLAG = "--xla_cpu_multi_thread_eigen"
# JAX plugins for accelerators: where one is installed the model runs there, not on these devices.
ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                       "jax_rocm7_plugin", "libtpu")


def one_device_per_core(environ=None, cores: int | None = None) -> int | None:
  """Put the flags for `cores` single-threaded CPU devices (default: the cores this process may
  run on) into XLA_FLAGS. Returns that count, or None where it changes nothing:
  DIT_JAX_CPU_DEVICES is 0 or 1, XLA_FLAGS already names either flag (the user's choice wins), an
  accelerator plugin is installed (unless DIT_JAX_CPU_DEVICES gives a count), one core, or JAX's
  backends have already started (the flags are read once, at that start)."""
  environ = os.environ if environ is None else environ
  wanted = environ.get(ENV, "auto").strip().lower()
  if wanted != "auto" and not wanted.isdigit():
    raise ValueError(f"{ENV}={wanted!r}: give 'auto' or a number of CPU devices (0 or 1: XLA's own)")
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
  import sys
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge    # no public way to ask; the flags are read when this says True
  return xla_bridge.backends_are_initialized()
