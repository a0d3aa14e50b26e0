"""One plug-in mechanism for every pluggable part (families, localizers, objectives, judges, knowledge
sets, data sources, training tasks): a Registry maps a name to its object, given directly or
registered by a decorator from a plugin, or as "module:attribute", imported on first use, so naming
a family or localizer imports only its own file.

    FAMILIES = Registry("model family", {"pixart": "dit_jax.families.pixart:FAMILY"})
    FAMILIES.get("pixart")                   # an unknown name lists the known ones

    JUDGES = Registry("judge")
    @JUDGES.register("clip")                 # or JUDGES.register("clip", ClipJudge)
    class ClipJudge(Judge): ...
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any


_REQUIRED = object()


class Registry(MutableMapping):
  """name -> object, where a "module:attribute" string stands for the object it names."""

  def __init__(self, kind: str, entries: Mapping[str, Any] | None = None, hint: str = ""):
    self.kind, self.hint = kind, hint   # hint: appended to the unknown-name error
    self._entries = dict(entries or {})

  def register(self, name: str, obj: Any = None):
    """Add `obj` (an object or "module:attribute") as `name`; without `obj`, a decorator."""
    if obj is None:
      def decorate(fn):
        self._entries[name] = fn
        return fn
      return decorate
    self._entries[name] = obj
    return obj

  def get(self, name: str, default: Any = _REQUIRED) -> Any:
    """The object registered as `name`; an unknown name is a ValueError listing the known ones
    (or `default`, where one is given, as a Mapping's get returns it)."""
    if name not in self._entries and default is not _REQUIRED:
      return default
    if name not in self._entries:
      raise ValueError(f"unknown {self.kind} {name!r}; choose from {self.names()}"
                       + (f" {self.hint}" if self.hint else ""))
    return self[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def __getitem__(self, name: str) -> Any:
    entry = self._entries[name]
    if isinstance(entry, str) and ":" in entry:
      module, _, attribute = entry.partition(":")
      entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
    return entry

  def __setitem__(self, name: str, obj: Any) -> None:
    self._entries[name] = obj

  def __delitem__(self, name: str) -> None:
    del self._entries[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)
