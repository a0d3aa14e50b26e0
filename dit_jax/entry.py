"""What the entry points (localize.py, train.py, generate.py) share: how they start and report a user
error (run_cli: a few lines naming the fix, no traceback), config checks they run before any work,
the same way (so an empty or impossible input is named at once instead of surfacing as an
IndexError after minutes of scoring, or as a run that silently does nothing), and the plugins a
config names."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import socket
import sys
import warnings

import jax.numpy as jnp

from dit_jax import families, hub, localization, provenance, verdict

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def require_checkpoint(config) -> None:
  """Stop with a message saying where to get weights when config.checkpoint is empty, and with the
  valid choices when config.dtype is unknown; then resolve a Hub id (resolve_checkpoint)."""
  if not config.get("checkpoint"):
    raise SystemExit(f"config.checkpoint is empty: pass --config.checkpoint=/path/to/weights or a "
                     f"Hub id (owner/name). {families.get(config.model).published}")
  if config.dtype not in DTYPES:
    raise SystemExit(f"config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
  resolve_checkpoint(config)
  require_weights(config, config.checkpoint)


def resolve_checkpoint(config) -> None:
  """Replace a Hub id in config.checkpoint ("PixArt-alpha/PixArt-XL-2-512x512", at config.revision)
  by its local snapshot folder (dit_jax/hub.py), once and before anything reads it: the loaders and
  the weights fingerprint of a run's provenance then see a path, and the path's commit records which
  version ran. A local path is kept. Every job that takes a checkpoint needs the VAE: localize.py's
  judge sees decoded images, train.py encodes its images and samples, generate.py decodes."""
  if not config.get("checkpoint"):
    return
  try:
    config.checkpoint = hub.resolve_pipeline(config.checkpoint, config.model,
                                             config.get("revision") or None)
  except hub.HubError as error:
    raise SystemExit(f"config.checkpoint: {error}")


def require_weights(config, path: str | None) -> None:
  """The weights a job reads exist: a path that is neither a local folder nor a Hub id is named
  before any loader fails on it, with where weights are (resolve_checkpoint has resolved Hub ids;
  a pretraining run's checkpoint is the folder it will write, so it calls this with None)."""
  if path and not os.path.exists(path):
    raise SystemExit(f"config.checkpoint={path!r} does not exist. {where_weights_are(config)}")


def require_pipeline(config) -> None:
  """localize.py and generate.py sample from a diffusers pipeline folder (config.checkpoint: the
  transformer, scheduler, tokenizers and text encoders); a path that is none is named with what to
  pass instead, before a loader fails on a missing subfolder. A fine-tuning run's workdir holds only
  its exported transformer/, which config.transformer (generate.py) puts into the base pipeline."""
  path = config.checkpoint
  if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "model_index.json")):
    return
  family = families.get(config.model)
  missing = [c for c in ("transformer", *family.text_components)
             if not os.path.isdir(os.path.join(path, c))]
  if not missing:
    return
  if os.path.isdir(os.path.join(path, "transformer")) or os.path.isfile(os.path.join(path, "config.json")):
    raise SystemExit(transformer_only(config, path))
  raise SystemExit(f"config.checkpoint={path!r} is no diffusers pipeline folder: it lacks "
                   f"{', '.join(c + '/' for c in missing)} and model_index.json. "
                   f"{where_weights_are(config)}")


def transformer_only(config, path: str) -> str:
  """What to pass for a folder holding a transformer without its pipeline: a fine-tuning run's
  workdir (its export in <workdir>/transformer), or a transformer folder itself."""
  folder = os.path.join(path, "transformer") if os.path.isdir(os.path.join(path, "transformer")) else path
  base = recorded_base(path) or "<the pipeline it was fine-tuned from>"
  return (f"config.checkpoint={path!r} holds a transformer but no pipeline (no tokenizer/, "
          f"text_encoder/, model_index.json): a fine-tuning run exports only its transformer. Sample "
          f"it inside its base pipeline: --config.checkpoint={base} --config.transformer={folder}")


def recorded_base(workdir: str) -> str | None:
  """The base pipeline a training run in `workdir` started from, as its inputs record names it."""
  record = os.path.join(workdir, provenance.RECORD)
  try:
    with open(record) as f:
      base = json.load(f)["run"]["checkpoint"]
  except (OSError, ValueError, KeyError, TypeError):
    return None
  return base if isinstance(base, str) and base else None


def where_weights_are(config) -> str:
  """Where a run of this config finds weights: a Shapes run the shipped model, others the family's
  published weights."""
  if "dit_jax.shapes.plugin" in config.get("plugins", ()):
    from dit_jax.shapes import ASSETS
    return (f"The shipped Shapes model is {ASSETS} (configs/shapes.py's default); a pretraining run "
            "writes its pipeline to <workdir>/pipeline, a fine-tuning run its transformer to "
            "<workdir>/transformer (pass that as --config.transformer=...).")
  return families.get(config.model).published


def import_plugins(config) -> None:
  """Import the modules config.plugins names, so the judges, knowledge sets and objectives they
  register can be named by the config (the Shapes world's: "dit_jax.shapes.plugin")."""
  for name in config.get("plugins", ()):
    try:
      importlib.import_module(name)
    except ImportError as error:
      raise SystemExit(f"config.plugins names {name!r}, which does not import: {error}")


# What to pass instead, per config field.
EXAMPLES = {"seeds": "(0,)", "ks": "(4,)"}


def require_nonempty(config, *names: str) -> None:
  for name in names:
    if not tuple(config[name]):
      raise ValueError(f"config.{name} is empty: give at least one, e.g. "
                       f"--config.{name}=\"{EXAMPLES.get(name, '(...)')}\"")


def require_positive(config, *names: str) -> None:
  for name in names:
    if config[name] < 1:
      raise ValueError(f"config.{name}={config[name]}: it counts, so give at least 1")


def make_out_dir(path: str) -> str:
  """Create the output folder up front, or stop naming it (before any work is done)."""
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as error:
    raise SystemExit(f"cannot write the output folder {path!r}: {error.strerror}; choose another "
                     "with --config.out_dir=...") from None
  if not os.access(path, os.W_OK):
    raise SystemExit(f"cannot write the output folder {path!r}; choose another with --config.out_dir=...")
  return path


@contextlib.contextmanager
def out_dir_lock(folder: str, name: str = ".lock"):
  """Hold `folder`/`name` while a job writes into the folder: a second job started into it is
  refused naming the first one's process (two identical runs would both compute every result and
  write over each other). A lock left by a process that died (same host, no such pid) is taken
  over."""
  path = os.path.join(folder, name)
  mine = {"pid": os.getpid(), "host": socket.gethostname(), "command": sys.argv}
  while True:
    try:
      with open(path, "x") as f:
        json.dump(mine, f)
      break
    except FileExistsError:
      holder = _lock_holder(path)
      if holder is not None:
        raise SystemExit(f"{folder} is in use by another run ({holder}); wait for it to finish, or "
                         f"write elsewhere with --config.out_dir=... (if that run is gone, delete "
                         f"{path})") from None
      _remove(path)   # a dead process's lock
  try:
    yield path
  finally:
    _remove(path)


def _lock_holder(path: str) -> str | None:
  """Who holds the lock at `path` ("pid 123 on host h: python localize.py ..."); None where
  its process has ended (on this host) or the file is unreadable or gone."""
  try:
    with open(path) as f:
      held = json.load(f)
    pid, host = int(held["pid"]), str(held["host"])
  except (OSError, ValueError, KeyError, TypeError):
    return None
  if host == socket.gethostname():
    if pid == os.getpid():
      return None
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return None
    except PermissionError:
      pass   # alive, another user's
  command = " ".join(held.get("command") or [])
  return f"pid {pid} on host {host}" + (f": {command}" if command else "")


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def validate_localize_config(config) -> None:
  """localize.py: scores are averaged over the seeds, and the sweep needs a K (the first also
  marks the heatmap)."""
  require_nonempty(config, "seeds", "ks")
  check_k_values(config.ks)
  require_positive(config, "num_steps", "intervention_chunk", "batch_size")
  if config.get("pooled_swap") and config.get("time_windows"):
    raise ValueError("config.pooled_swap with config.time_windows: the pooled CLIP vector reaches "
                     "every sampling step through the modulation, so a windowed intervention "
                     "cannot swap it; run the windows with --config.pooled_swap=False")
  if "exact_limit" in config and not config.get("random_overlap", True):
    raise ValueError("config.random_overlap=False with the exact verdict (config.exact_limit): its null "
                     "is every K-block set, top-K's blocks included; leave random_overlap=True")
  if config.get("random_draws", 1) < 1:
    raise ValueError(f"config.random_draws={config.random_draws}: the verdict ranks top-K among "
                     "random K-sets, so it needs at least one (200 by default)")
  for key, flag in (("random_draws", "removable"), ("reverse_draws", "sufficient")):
    draws = config.get(key, 0)
    # p = (1 + #sets at least as extreme) / (R + 1) >= 1 / (R + 1), and BH only raises it.
    if draws > 0 and 1 / (draws + 1) >= verdict.ALPHA:
      warnings.warn(f"config.{key}={draws}: with {draws} random K-sets the set-level p cannot go "
                    f"below 1/{draws + 1} = {1 / (draws + 1):.3f}, so no cell can be '{flag}' at "
                    f"{verdict.ALPHA} (docs/design.md, \"Verdict\")", stacklevel=2)


def check_k_values(ks) -> None:
  """Each K is a block count (a whole number; 0 is the original) or a fraction of the blocks in
  (0, 1): 1.5 would have swept K = 1 without a word."""
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k == int(k) or 0 < k < 1):
      raise ValueError(f"config.ks={tuple(ks)}: K={k!r} is neither a count of blocks (a whole number "
                       "such as 4) nor a fraction of them in (0, 1) such as 0.3; e.g. "
                       "--config.ks=\"(2, 4)\" or --config.ks=\"(0.1, 0.3)\"")


def validate_generate_config(config) -> None:
  """generate.py: every prompt is drawn once per seed, so no seeds would write no image."""
  require_nonempty(config, "seeds")


def validate_ks(ks, num_blocks: int) -> list[int]:
  """The K grid as block counts in 0..num_blocks (counts, or fractions of the blocks; K = 0 is the
  original), checked before any scoring so a bad K does not surface after minutes of work; at
  least one K must select a block."""
  counts = [localization.resolve_k(k, num_blocks) for k in ks]
  if not any(counts):
    raise ValueError(f"config.ks={tuple(ks)} selects no block of {num_blocks}: give a count >= 1 "
                     f"or a fraction >= {0.5 / num_blocks:.3f}")
  return counts


# What a user's input raises (a config value, a path, a data folder): reported as a message. Any
# other exception is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
DEBUG_HINT = "(the traceback: rerun with --debug or DIT_JAX_DEBUG=1)"


def run_cli(main) -> None:
  """absl's app.run(main) for an entry point, with user errors as a message of a few lines: a bad
  command line (an unknown config key: ml_collections' "Did you mean ...") and USER_ERRORS raised
  by main; Ctrl-C outside what a job handles itself. --debug or DIT_JAX_DEBUG=1 keeps the
  traceback."""
  from absl import app
  debug = os.environ.get("DIT_JAX_DEBUG", "") not in ("", "0") or "--debug" in sys.argv
  sys.argv = [a for a in sys.argv if a != "--debug"]
  if "--help" in sys.argv or "-h" in sys.argv:
    print(config_help(sys.modules["__main__"].__doc__ or "", config_path(sys.argv)))
    raise SystemExit(0)
  started = []

  def main_started(argv):
    started.append(True)
    return main(argv)
  try:
    app.run(main_started)
  except KeyboardInterrupt:
    if debug:
      raise
    print(f"\ninterrupted {DEBUG_HINT}", file=sys.stderr)
    raise SystemExit(130) from None
  except Exception as error:   # SystemExit (a message already) passes through
    command_line = not started   # raised while absl parsed the flags and loaded the config
    if debug or not (command_line or isinstance(error, USER_ERRORS)):
      raise
    raise SystemExit(user_message(error, command_line)) from None


def user_message(error: BaseException, command_line: bool) -> str:
  """The error's own words (unwrapped: ml_collections wraps a KeyError in an AttributeError and
  quotes it), prefixed with where it came from."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
  script = os.path.basename(sys.argv[0])
  if command_line:
    if isinstance(error, (KeyError, AttributeError)):   # an unknown --config.<key>
      text = (f"the config has no key {text.strip()}\nThe config's keys: python {script} --config "
              "<file> --help")
    return f"{script}: bad command line: {text.strip()}\n{DEBUG_HINT}"
  return f"{script}: {text.strip()}\n{DEBUG_HINT}"


# Where the shared keys are set and explained (each model or job config adds its own).
KEY_SOURCES = ("configs/common.py", "dit_jax/jobs/defaults.py")
KEY_COMMENT = re.compile(r"^\s*config\.(\w+)\s*=[^#\n]*(?:#\s*(.*))?$")


def config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def config_help(doc: str, path: str | None) -> str:
  """--help: the entry point's usage, then every key of the config (its value and the comment
  that explains it where the config files have one), or where the keys are documented."""
  text = doc.strip() + "\n\nFlags: --config FILE (required), --config.KEY=VALUE (any key below), --debug " \
      "(tracebacks); absl's own flags: --helpfull.\n"
  if not path:
    return text + ("\nThe config keys are set and explained in configs/common.py (shared), "
                   "dit_jax/jobs/defaults.py (training) and configs/<model or job>.py; "
                   "`--config configs/shapes.py --help` lists a config's keys.")
  from ml_collections import config_flags
  config = config_flags.config_flags._LoadConfigModule("config", path).get_config()
  comments = key_comments([path, *KEY_SOURCES])
  lines = [f"\nconfig keys of {path}:"]
  for key in sorted(config.keys()):
    value = repr(config[key].to_dict() if hasattr(config[key], "to_dict") else config[key])
    value = value if len(value) <= 40 else value[:37] + "..."
    lines.append(f"  {key} = {value}" + (f"    # {comments[key]}" if comments.get(key) else ""))
  return text + "\n".join(lines)


def key_comments(paths) -> dict[str, str]:
  """key -> the comment on the line that sets config.<key>, or the comment lines just above it;
  the first file that explains a key wins."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  found: dict[str, str] = {}
  for path in paths:
    full = path if os.path.isabs(path) or os.path.exists(path) else os.path.join(root, path)
    try:
      with open(full) as f:
        lines = f.read().splitlines()
    except OSError:
      continue
    above: list[str] = []
    for line in lines:
      match = KEY_COMMENT.match(line)
      if match and match.group(1) not in found and (match.group(2) or above):
        found[match.group(1)] = (match.group(2) or " ".join(above)).strip()
      stripped = line.strip()
      above = above + [stripped.lstrip("# ")] if stripped.startswith("#") else []
  return found
