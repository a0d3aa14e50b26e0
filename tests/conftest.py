"""Session-wide test setup.

A JAX persistent compilation cache in a fresh folder for this pytest session (and the subprocesses
its tests start: train.py, localize.py, the 8-device runs, which inherit the environment). Many
tests compile the very same programs (the shipped Shapes model's sampling loop and sweep, the tiny
models' train steps) in new pipelines, new processes or new jit closures; with the cache XLA
compiles each distinct program once and loads it afterwards. A loaded executable is the one XLA
compiled (the key is a hash of the program, the compile options, the devices and XLA_FLAGS), so no
result changes; the folder starts empty, so nothing carries over from another session or another
version of the code. DIT_JAX_TEST_COMPILATION_CACHE=0 turns it off.

torch.exp rounded once, from float64, for float32 tensors (`correctly_rounded_torch_exp`): the
references are diffusers' modules, and their sinusoidal timestep tables call torch.exp, which goes
through MKL, whose last bit depends on the CPU's instruction set (3 of 128 FLUX frequencies one ulp
off with AVX-512, 6 with AVX2, 2 with SSE4.2: MKL_ENABLE_INSTRUCTIONS). At FLUX's guidance x 1000
one ulp of a frequency moves diffusers' own output by up to 2.4e-5 from one instruction set to the
next, more than the 1e-5 the parity tests hold the port to; with the table correctly rounded, as the
port computes it (layers.timestep_embedding), the tests measure the port, not the CPU they run on.
"""
import os
import shutil
import tempfile

import pytest

_CACHE_DIR = None
if os.environ.get("DIT_JAX_TEST_COMPILATION_CACHE", "1") != "0" and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix="dit_jax_test_jax_cache_")
  # Environment variables (read when jax is imported, here and in subprocesses)...
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  import jax  # noqa: E402  ...and the config itself, should a plugin have imported jax already.
  jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
  if _CACHE_DIR is not None and os.environ.get("JAX_COMPILATION_CACHE_DIR") == _CACHE_DIR:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def correctly_rounded_torch_exp():
  import torch
  exp = torch.exp

  def exp_rounded_once(x, *args, **kwargs):
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and not args and not kwargs:
      return exp(x.double()).float()
    return exp(x, *args, **kwargs)

  torch.exp = exp_rounded_once
  yield
  torch.exp = exp
