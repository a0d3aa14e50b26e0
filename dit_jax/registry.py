"""Lookup by name in a registry of "module:attribute" strings, imported on first use, so naming a
family, localizer or objective imports only its own file."""
from __future__ import annotations

import importlib
from collections.abc import Mapping


def lookup(registry: Mapping[str, str], name: str, kind: str):
  """The object registry[name] points to; an unknown name lists the known ones."""
  if name not in registry:
    raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(registry)}")
  module, _, attribute = registry[name].partition(":")
  return getattr(importlib.import_module(module), attribute)
