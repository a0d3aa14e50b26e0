"""Writing results so that a killed run never leaves a torn file, and hashing the files results
depend on. Every module writes JSON through here."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable


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
