"""The house by stage (docs/design.md, "Layout"): ports/ stands apart from dit_jax, the import graph
has no upward arrow and few floors, dit_jax's root holds only the shared modules, and the verdict and
report stages import without JAX (a finished run can be re-read on any machine)."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_ROOT_MODULES = {"blocks", "cli", "files", "knowledge", "provenance", "registry", "sharding"}
MAX_FLOORS = 8


def modules() -> dict[str, str]:
  """dotted name -> path, for dit_jax, ports and the root command lines."""
  found = {}
  for top in ("dit_jax", "ports"):
    for folder, _, names in os.walk(os.path.join(REPO, top)):
      for name in names:
        if name.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, name), REPO)[:-3].replace(os.sep, ".")
          found[rel.removesuffix(".__init__")] = os.path.join(folder, name)
  for name in ("localize", "train", "generate", "convert"):
    found[name] = os.path.join(REPO, name + ".py")
  return found


def imports(path: str, package: str, known) -> set[str]:
  """The modules of `known` that `path` imports, at any depth of its code (lazy imports count)."""
  out = set()
  for node in ast.walk(ast.parse(open(path).read())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      names = [base] + [f"{base}.{a.name}" for a in node.names]
    for name in names:
      while name and name not in known:
        name = name.rpartition(".")[0]
      if name:
        out.add(name)
  return out


def graph():
  known = modules()
  edges = {}
  for name, path in known.items():
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    edges[name] = imports(path, package, known) - {name}
  return edges


def floors(edges) -> int:
  """The longest import chain, in modules (a cycle raises: it has no floors)."""
  height, visiting = {}, set()

  def climb(node):
    if node in height:
      return height[node]
    if node in visiting:
      raise AssertionError(f"import cycle through {node}")
    visiting.add(node)
    height[node] = 1 + max((climb(n) for n in edges[node]), default=0)
    visiting.discard(node)
    return height[node]
  return max(climb(n) for n in edges)


def room(module: str) -> str:
  parts = module.split(".")
  return ".".join(parts[:2]) if parts[0] == "dit_jax" else parts[0]


def test_ports_imports_nothing_from_dit_jax():
  edges = graph()
  offending = {m: sorted(t for t in targets if t.startswith("dit_jax"))
               for m, targets in edges.items() if m.startswith("ports")}
  assert not any(offending.values()), offending


def test_no_upward_arrow_and_at_most_eight_floors():
  edges = graph()
  rooms = {}
  for source, targets in edges.items():
    rooms.setdefault(room(source), set()).update(room(t) for t in targets if room(t) != room(source))
  floors(rooms)                                   # packages: no cycle between stages
  assert floors(edges) <= MAX_FLOORS              # modules: the longest chain of imports


def test_dit_jax_root_holds_only_the_shared_modules():
  root = {name[:-3] for name in os.listdir(os.path.join(REPO, "dit_jax"))
          if name.endswith(".py") and name != "__init__.py"}
  assert root == SHARED_ROOT_MODULES


def test_the_verdict_and_report_import_without_jax():
  code = ("import sys; sys.modules['jax'] = None; sys.modules['flax'] = None\n"
          "import pkgutil, importlib, dit_jax.verdict, dit_jax.report\n"
          "for package in (dit_jax.verdict, dit_jax.report):\n"
          "  for m in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
          "    importlib.import_module(m.name)\n"
          "print('imported')")
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-2000:]


def test_a_cycle_and_a_tall_chain_are_caught():
  """What the tests above guard against, on small graphs."""
  with pytest.raises(AssertionError, match="cycle"):
    floors({"a": {"b"}, "b": {"a"}})
  assert floors({f"m{i}": {f"m{i + 1}"} for i in range(9)} | {"m9": set()}) == 10
