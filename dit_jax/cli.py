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


def check_k_values(ks) -> None:
  """Each K is a block count (a whole number; 0 is the original) or a fraction of the blocks in
  (0, 1): 1.5 would have swept K = 1 without a word."""
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not (k == int(k) or 0 < k < 1):
      raise ValueError(f"config.ks={tuple(ks)}: K={k!r} is neither a count of blocks (a whole number "
                       "such as 4) nor a fraction of them in (0, 1) such as 0.3; e.g. "
                       "--config.ks=\"(2, 4)\" or --config.ks=\"(0.1, 0.3)\"")


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
KEY_SOURCES = ("configs/common.py", "dit_jax/train/defaults.py")


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
                   "dit_jax/train/defaults.py (training) and configs/<model or job>.py; "
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
