"""What every command line (localize.py, train.py, generate.py, convert.py) shares: how it starts and
reports a user error (run_cli: a few lines naming the fix, no traceback), --help listing a config's
keys, the output folder and its lock, checks of counts and K values that run before any work, and the
plugins a config names."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import socket
import sys


def import_plugins(config) -> None:
  """Import the modules config.plugins names, so the judges, knowledge sets and objectives they
  register can be named by the config (the Shapes world's: "dit_jax.shapes.plugin")."""
  for name in config.get("plugins", ()):
    try:
      importlib.import_module(name)
    except ImportError as error:
      raise SystemExit(f"config.plugins names {name!r}, which does not import: {error}")


# What to pass instead, per config field.
EXAMPLES = {"sample.seeds": "(0,)", "sweep.ks": "(4,)"}


def value_at(tree, key: str):
  """A config (sub)tree's value at the dotted `key` ("sweep.ks")."""
  for part in key.split("."):
    tree = tree[part]
  return tree


def require_nonempty(config, *names: str) -> None:
  """Each dotted key of `names` holds at least one value."""
  for name in names:
    if not tuple(value_at(config, name)):
      raise ValueError(f"config.{name} is empty: give at least one, e.g. "
                       f"--config.{name}=\"{EXAMPLES.get(name, '(...)')}\"")


def require_positive(config, *names: str) -> None:
  for name in names:
    if value_at(config, name) < 1:
      raise ValueError(f"config.{name}={value_at(config, name)}: it counts, so give at least 1")


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


def check_k_values(ks) -> None:
  """Each K is a block count (a whole number; 0 is the original) or a fraction of the blocks in
  (0, 1): 1.5 would have swept K = 1 without a word."""
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k == int(k) or 0 < k < 1):
      raise ValueError(f"config.sweep.ks={tuple(ks)}: K={k!r} is neither a count of blocks (a whole "
                       "number such as 4) nor a fraction of them in (0, 1) such as 0.3; e.g. "
                       "--config.sweep.ks=\"(2, 4)\" or --config.sweep.ks=\"(0.1, 0.3)\"")


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
  refuse_moved_keys(sys.argv)
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
KEY_SOURCES = ("configs/common.py", "dit_jax/train/defaults.py")


KEY_COMMENT = re.compile(r"^\s*config\.([\w.]+)\s*=[^#\n]*(?:#\s*(.*))?$")


# Where each key of the flat localize/generate config (before the stages had subtrees,
# configs/common.py) lives now. A command line or a script that names one is told the new key
# rather than having it ignored; training configs, which kept their flat keys, are not affected.
MOVED = {
    **{k: f"sample.{k}" for k in ("num_steps", "guidance_scale", "height", "width", "seeds")},
    "knowledge": "knowledge.set",
    **{k: f"knowledge.{k}" for k in ("categories", "concepts", "concepts_per_category",
                                     "prompts_per_concept", "prompt_seed")},
    "localizers": "score.localizers", "batch_size": "score.batch_size",
    **{k: f"sweep.{k}" for k in ("localizer", "score_variant", "ks", "random_draws", "random_overlap",
                                 "exact_limit", "reverse_draws", "depth_draws", "single_blocks",
                                 "withhold", "time_windows", "pooled_swap", "residual_swap", "seed")},
    "judge": "judge.name", "judge_args": "judge.args",
    "power_effect": "verdict.power_effect", "presence_target": "verdict.presence_target",
    **{k: f"hosts.{k}" for k in ("num_devices", "fsdp", "intervention_chunk", "distributed",
                                 "process_count", "process_index", "merge_only")},
    **{k: f"generate.{k}" for k in ("prompt", "prompts_file", "transformer", "cache_dir")},
    "generate_dir": "generate.out_dir",
}
REMOVED = {"placebo": "a placebo re-ranks a run's stored sets instead: python -m studies.placebo"}


def moved_key(key: str) -> str | None:
  """What to say about the flat key `key` (possibly dotted below it, "judge_args.folder"), or None
  when it never moved."""
  head, _, rest = key.partition(".")
  if head in REMOVED:
    return f"config.{head} is gone: {REMOVED[head]}"
  if head not in MOVED:
    return None
  new = MOVED[head] + (f".{rest}" if rest else "")
  note = " (generate.py: config.generate.batch_size)" if head == "batch_size" else ""
  return f"config.{key} moved to config.{new}{note}"


def has_leaf(tree, key: str) -> bool:
  """Whether the dotted `key` names a value of a config (sub)tree, not a subtree."""
  node = tree
  for part in key.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return not hasattr(node, "keys")


def refuse_moved_keys(argv) -> None:
  """An old flat --config.KEY= that the loaded config no longer has stops the command line with the
  new key's name (absl would say only "no such key", or fail to parse a value for a subtree)."""
  path = config_path(argv)
  keys = [a[len("--config."):].split("=", 1)[0] for a in argv if a.startswith("--config.")]
  said = [moved_key(k) for k in keys if moved_key(k)]
  if not path or not said:
    return
  config = load_config(path)
  said = [moved_key(k) for k in keys if moved_key(k) and not has_leaf(config, k)]
  if said:
    script = os.path.basename(argv[0])
    raise SystemExit(f"{script}: bad command line: " + "; ".join(said) + f"\nThe config's keys: "
                     f"python {script} --config {path} --help")


def stray_moved_keys(config) -> None:
  """The same for a config built in Python (a script or a test): an old key set on an unlocked
  ConfigDict is a new top-level key that no stage reads, so it would be ignored without a word."""
  said = [moved_key(k) for k in config.keys() if moved_key(k) and not hasattr(config[k], "keys")]
  if said:
    raise ValueError("; ".join(said))


def config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config(spec: str):
  """The config a --config FILE[:ARG] names, as ml_collections' flag loads it."""
  from ml_collections import config_flags
  path, *args = spec.split(":", 1)
  return config_flags.config_flags._LoadConfigModule("config", path).get_config(*args)


def leaves(tree, prefix: str = ""):
  """(dotted key, value) of every value of a nested config, sorted within each subtree."""
  for key in sorted(tree.keys()):
    value = tree[key]
    if hasattr(value, "keys") and len(value.keys()):
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def config_help(doc: str, path: str | None) -> str:
  """--help: the entry point's usage, then every key of the config (its value and the comment
  that explains it where the config files have one), or where the keys are documented."""
  text = doc.strip() + "\n\nFlags: --config FILE (required), --config.KEY=VALUE (any key below, " \
      "e.g. --config.sweep.ks), --debug (tracebacks); absl's own flags: --helpfull.\n"
  if not path:
    return text + ("\nThe config keys are set and explained in configs/common.py (shared), "
                   "dit_jax/train/defaults.py (training) and configs/<model or job>.py; "
                   "`--config configs/shapes.py --help` lists a config's keys.")
  config = load_config(path)
  comments = key_comments([path.split(":", 1)[0], *KEY_SOURCES])
  lines = [f"\nconfig keys of {path}:"]
  for key, value in leaves(config):
    value = repr(value.to_dict() if hasattr(value, "to_dict") else value)
    value = value if len(value) <= 40 else value[:37] + "..."
    lines.append(f"  {key} = {value}" + (f"    # {comments[key]}" if comments.get(key) else ""))
  return text + "\n".join(lines)


def key_comments(paths) -> dict[str, str]:
  """dotted key -> the comment on the line that sets config.<key>, or the comment lines just above
  it; the first file that explains a key wins."""
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
