"""dit_jax/sharding.one_cpu_device_per_core: one single-threaded XLA CPU device per core, asked for before JAX starts,
and never over a choice the user made."""
import os
import subprocess
import sys

import pytest

from dit_jax import sharding

FLAGS = "--xla_force_host_platform_device_count=2 --xla_cpu_multi_thread_eigen=false"


@pytest.fixture
def fresh(monkeypatch):
  """As in a process whose JAX has not started, with no accelerator plugin installed."""
  monkeypatch.setattr(sharding, "backends_started", lambda: False)
  monkeypatch.setattr(sharding.importlib.util, "find_spec", lambda name: None)


def test_one_device_per_core_where_nothing_else_decides(fresh):
  environ = {}
  assert sharding.one_cpu_device_per_core(environ, cores=2) == 2
  assert environ["XLA_FLAGS"] == FLAGS
  kept = {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}        # other flags stay
  assert sharding.one_cpu_device_per_core(kept, cores=4) == 4
  assert kept["XLA_FLAGS"].startswith("--xla_dump_to=/tmp/d --xla_force_host_platform_device_count=4")
  assert sharding.one_cpu_device_per_core({}, cores=1) is None          # nothing to split


@pytest.mark.parametrize("environ", [
    {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},      # the user's layout wins
    {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true"},
    {"DIT_JAX_CPU_DEVICES": "1"}, {"DIT_JAX_CPU_DEVICES": "0"}])
def test_a_choice_already_made_is_left_alone(fresh, environ):
  before = dict(environ)
  assert sharding.one_cpu_device_per_core(environ, cores=2) is None
  assert environ == before


def test_an_accelerator_or_a_started_jax_is_left_alone(monkeypatch):
  monkeypatch.setattr(sharding, "backends_started", lambda: False)
  monkeypatch.setattr(sharding.importlib.util, "find_spec", lambda name: name == "jax_cuda12_plugin")
  assert sharding.one_cpu_device_per_core({}, cores=2) is None
  # A count given explicitly applies even then (the CPU devices are the user's to ask for).
  assert sharding.one_cpu_device_per_core({"DIT_JAX_CPU_DEVICES": "3"}, cores=2) == 3
  monkeypatch.setattr(sharding, "backends_started", lambda: True)   # too late: flags read once
  assert sharding.one_cpu_device_per_core({"DIT_JAX_CPU_DEVICES": "3"}, cores=2) is None


def test_a_bad_setting_says_what_it_takes(fresh):
  with pytest.raises(ValueError, match="give 'auto' or a number"):
    sharding.one_cpu_device_per_core({"DIT_JAX_CPU_DEVICES": "many"}, cores=2)


def test_a_fresh_process_gets_the_devices():
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(DIT_JAX_CPU_DEVICES="2", JAX_PLATFORMS="cpu")
  code = ("from dit_jax import sharding; n = sharding.one_cpu_device_per_core(); "
          "import jax; print(n, jax.local_device_count())")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True, timeout=120).stdout.split()
  assert out == ["2", "2"]
