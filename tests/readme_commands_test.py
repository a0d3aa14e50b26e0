"""Every command line the documents show names keys its config has (issue 40: "every old command in
the README still runs"): each `python localize.py|train.py|generate.py --config FILE ...` in README.md
and docs/*.md is read, its config loaded and each --config.KEY=VALUE checked against it, so a
renamed or nested key cannot leave a documented command behind."""
import glob
import os
import re
import shlex

import pytest

from dit_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRY = re.compile(r"^\s*(?:.*&&\s*)?(?:[A-Z_]+=\S+\s+)*(python (?:localize|train|generate)\.py\s)")


def documented_commands() -> list[tuple[str, list[str]]]:
  """(where, argv) of every entry-point command in the documents' code blocks, continuation lines
  joined."""
  found = []
  for path in [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]:
    text = open(path).read().replace("\\\n", " ")
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
      for line in block.splitlines():
        match = ENTRY.search(line)
        if not match:
          continue
        text_of = line[match.start(1):].split(" #")[0]
        try:
          argv = shlex.split(text_of)
        except ValueError:
          argv = text_of.split()
        found.append((f"{os.path.relpath(path, REPO)}: {line.strip()[:80]}", argv))
  return found


def has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


COMMANDS = documented_commands()


def test_the_documents_show_commands():
  assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_names_keys_its_config_has(where, argv, monkeypatch):
  monkeypatch.chdir(REPO)
  spec = cli.config_path(argv)
  assert spec, f"{where}: no --config"
  config = cli.load_config(spec)
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key = arg[len("--config."):].split("=", 1)[0]
      assert has_key(config, key), f"{where}: --config.{key} is no key of {spec} ({cli.moved_key(key)})"


def test_a_moved_key_is_caught():
  """What the test above guards against."""
  config = cli.load_config("configs/shapes.py")
  assert not has_key(config, "ks") and has_key(config, "sweep.ks")
