"""Writing results so that a killed run never leaves a torn file, and hashing the files results
depend on. Every module writes JSON through here."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import pathlib
from collections.abc import Callable

import numpy as np


def write_atomically(path: str | os.PathLike, write: Callable[[str], None]) -> None:
  """write(tmp_path) then rename over `path`: readers see the old file or the new one, never half."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
  def write(tmp):
    with open(tmp, "w", encoding="utf-8", newline="") as f:
      f.write(text)
  write_atomically(path, write)


@contextlib.contextmanager
def claimed(path: str | os.PathLike):
  """Yields whether this process holds the claim at `path` (a file naming host and pid) while the
  block runs. Parallel workers of one study claim each unit before running it, so none is run
  twice; a claim whose process has died on this host (a killed session) is taken over."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  mine = _take_claim(path)
  try:
    yield mine
  finally:
    if mine:
      os.remove(path)


def _take_claim(path: str) -> bool:
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      if _claim_is_live(path):
        return False
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)
      continue
    with os.fdopen(fd, "w") as f:
      f.write(f"{socket.gethostname()} {os.getpid()}")
    return True
  return False


def _claim_is_live(path: str) -> bool:
  try:
    with open(path) as f:
      host, pid = f.read().split()
  except FileNotFoundError:
    return False
  except ValueError:         # created, not yet written: its writer is alive
    return True
  if host != socket.gethostname():
    return True              # another machine's process: cannot be checked from here
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  return True


def write_npy(path: str | os.PathLike, array) -> None:
  """np.save, atomically: processes sharing a cache never read a half-written array."""
  def write(tmp):
    with open(tmp, "wb") as f:   # a file object: np.save would add ".npy" to a name
      np.save(f, array)
  write_atomically(path, write)


def write_json(path: str | os.PathLike, obj, indent: int = 2, allow_nan: bool = True) -> None:
  write_text(path, json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n")


def read_json(path: str | os.PathLike):
  with open(path) as f:
    return json.load(f)


def sha256(path: str | pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 24), b""):
      digest.update(block)
  return digest.hexdigest()


_MISSING = object()


def recorded_value(config: dict, key: str, default=_MISSING):
  """A value of a run's recorded config (run.json) by its leaf name ("seeds"), in either layout:
  flat (runs before the config had stages) or nested by stage ({"sample": {"seeds": ...}})."""
  if key in config and not isinstance(config[key], dict):
    return config[key]
  for subtree in config.values():
    if isinstance(subtree, dict) and key in subtree:
      return subtree[key]
  if default is _MISSING:
    raise KeyError(f"the recorded config has no {key!r}")
  return default
