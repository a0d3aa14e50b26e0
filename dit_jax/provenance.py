"""What a stored result was computed from, so a rerun resumes only results of the same inputs.

A run's workdir records, per stage, the inputs that decide it: the config values it reads (a
localization stage's config subtree; dit_jax/localize/inputs.py) and a fingerprint of the weights. A rerun whose inputs differ is refused with the differences named, or,
with `fresh`, the stages whose inputs changed are cleared and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence

from dit_jax import files

RECORD = "inputs.json"


class StaleResults(RuntimeError):
  """The workdir holds results computed from other inputs."""


def weights_fingerprint(path: str, content: bool = False) -> str:
  """sha256 over the content of the model weights at `path` (a pipeline folder's transformer/, a
  model folder, or a single file), and over the names, sizes and times of its other files: a
  fine-tuned copy differs even when it keeps every file's size and time. `content`: every file by
  its content, so the fingerprint is the same in any clone (a time is not; for small folders, as
  the shipped Shapes model, whose results are stored in the repository)."""
  path = os.path.abspath(path)
  digest = hashlib.sha256()
  weights = os.path.join(path, "transformer") if os.path.isdir(os.path.join(path, "transformer")) else path
  for file in _files(path):
    rel = os.path.relpath(file, path) if os.path.isdir(path) else os.path.basename(file)
    digest.update(rel.encode())
    if content or file == weights or file.startswith(weights + os.sep):
      digest.update(files.sha256(file).encode())
    else:
      stat = os.stat(file)
      digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
  return digest.hexdigest()[:32]


# Documentation beside the weights (a model card, sample pictures) decides no result: editing it
# must not make a run's results look computed from other weights.
DOCUMENTATION = (".md", ".png", ".jpg", ".jpeg")


def _files(path: str) -> list[str]:
  if os.path.isfile(path):
    return [path]
  return sorted(os.path.join(root, f) for root, _, names in os.walk(path) for f in names
                if not f.lower().endswith(DOCUMENTATION))


def stage_inputs(config: Mapping, keys: Sequence[str], **extra) -> dict:
  """The values of `keys` in the config (JSON-comparable), plus `extra` (e.g. the weights)."""
  return {**{k: as_json(config[k]) for k in keys}, **extra}


def as_json(value):
  """A config value (a subtree as nested dicts, tuples as lists) as the record stores it."""
  return json.loads(json.dumps(value.to_dict() if hasattr(value, "to_dict") else value, default=list))


def flat(record: Mapping, prefix: str = "") -> dict:
  """A nested record as {"sweep.ks": ...}: a change is named by its dotted key."""
  out = {}
  for key, value in record.items():
    if isinstance(value, Mapping) and value:
      out.update(flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differences(old: Mapping, new: Mapping) -> list[str]:
  old, new = flat(old), flat(new)
  if not set(old) & set(new):   # no key in common: recorded in another layout
    return ["recorded by an earlier version of dit_jax, whose record cannot be compared with this "
            "one (its config had no stages)"]
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)]


def resume(workdir: str, stages: Mapping[str, dict], outputs: Mapping[str, Sequence[str]],
           fresh: bool = False) -> None:
  """Compare each stage's inputs with those recorded in `workdir`. A stage whose inputs changed is
  refused (StaleResults naming the changes), or with `fresh` its outputs (paths relative to
  workdir) are removed. Then the current inputs are recorded."""
  path = os.path.join(workdir, RECORD)
  recorded = files.read_json(path) if os.path.exists(path) else {}
  changed = {name: differences(recorded[name], inputs) for name, inputs in stages.items()
             if name in recorded and recorded[name] != inputs}
  untracked = [name for name in stages if name not in recorded
               and any(os.path.exists(os.path.join(workdir, o)) for o in outputs[name])]
  if (changed or untracked) and not fresh:
    lines = [f"  {name}: " + "; ".join(diff) for name, diff in changed.items()]
    lines += [f"  {name}: results of unknown inputs (written before inputs were recorded)"
              for name in untracked]
    raise StaleResults(f"{workdir} holds results computed from other inputs:\n" + "\n".join(lines)
                       + "\nUse another out_dir, or --config.fresh=True to recompute them.")
  for name in list(changed) + untracked:
    for output in outputs[name]:
      target = os.path.join(workdir, output)
      if os.path.isdir(target):
        shutil.rmtree(target)
      elif os.path.exists(target):
        os.remove(target)
  files.write_json(path, {**recorded, **stages})
