"""No import cycles between the files of vltseg_core and vltseg_ros.

Every import counts, including those inside functions: a function-level import that closes a
circle only moves the failure to the first call. Importing `a.b.c` also runs the package files
`a/__init__.py` and `a/b/__init__.py`, so those are edges too (unless the importer lives inside
that package, which is then already imported).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vltseg_core", "vltseg_ros")


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of PACKAGES under root."""
    mods = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imported_names(module: str, path: Path) -> list[str]:
    """Absolute dotted names imported anywhere in the file (`from p import x` gives p.x)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def _targets(name: str, importer: str, mods: dict[str, Path]) -> set[str]:
    """The project files that importing `name` from `importer` runs."""
    out = set()
    while name:
        if name in mods and not (importer == name or importer.startswith(name + ".")):
            out.add(name)
        name = name.rpartition(".")[0]
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = _modules(root)
    return {m: set().union(*(_targets(n, m, mods) for n in _imported_names(m, p)))
            for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a] where each module imports the next, or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()  # graph values are a node's predecessors
    except graphlib.CycleError as exc:
        return exc.args[1][::-1]
    return None


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert {"vltseg_core.train.engine", "vltseg_ros.cli"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("files, cycle", [
    # a function-level import closing the circle counts
    ({"a.py": "from vltseg_core import b\n",
      "b.py": "def f():\n    from vltseg_core.a import x\n"}, True),
    # importing a submodule runs its package's __init__, which may lead back
    ({"a.py": "from vltseg_core.p.leaf import x\n",
      "p/__init__.py": "from vltseg_core.p.heavy import y\n", "p/leaf.py": "",
      "p/heavy.py": "import vltseg_core.a\n"}, True),
    # relative imports resolve against the importer's package
    ({"p/__init__.py": "", "p/c.py": "from . import d\n",
      "p/d.py": "from .c import z\n"}, True),
    # a package importing its own submodules, which import siblings, is no cycle
    ({"p/__init__.py": "from .c import z\n", "p/c.py": "from vltseg_core.p.d import w\n",
      "p/d.py": "import numpy\n"}, False),
])
def test_cycle_finder(tmp_path: Path, files: dict[str, str], cycle: bool) -> None:
    """The checker itself finds what it must, so the test above cannot pass vacuously."""
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for name, text in files.items():
        path = tmp_path / "vltseg_core" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert (find_cycle(import_graph(tmp_path)) is not None) == cycle
