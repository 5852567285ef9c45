"""The package's modules form layers: no import cycle between llmcodec modules, none importing the package root.

Imports are read from the source with ``ast`` (nothing is imported), at any depth: an import inside a
function to dodge a cycle still counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "llmcodec"


def _modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at ``root``."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, top: str) -> list[str]:
    """The dotted names an import statement in ``module`` reaches inside package ``top``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == top or a.name.startswith(top + ".")]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if prefix != top and not prefix.startswith(top + "."):
        return []
    return [f"{prefix}.{a.name}" for a in node.names]


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from pkg import name`` of a non-module: ``pkg`` itself)."""
    mods = _modules(root)
    top = root.name
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for name in _targets(node, mod, path.name == "__init__.py", top):
                while name not in mods and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in mods and name != mod:
                    deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 30 and "llmcodec.artifact" in graph["llmcodec.api"]  # the graph was really read
    assert cycles(graph) == []


def test_no_module_imports_the_package_root():
    up = sorted(m for m, deps in import_graph(PACKAGE).items() if m != "llmcodec" and "llmcodec" in deps)
    assert up == [], f"import from a lower module instead (the version: llmcodec._version): {up}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.mark.parametrize(
    "files, cycle",
    [
        # a cycle hidden in a function-level import
        ({"a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n"}, ["pkg.a", "pkg.b"]),
        # absolute imports, through a third module
        ({"a.py": "import pkg.b\n", "b.py": "from pkg.c import y\n", "c.py": "from pkg import a\n"},
         ["pkg.a", "pkg.b", "pkg.c"]),
        # a submodule importing a name the package root re-exports from it
        ({"__init__.py": "from .a import f\n", "a.py": "from . import __version__\n"}, ["pkg", "pkg.a"]),
        # inside a subpackage, ``..`` reaching the parent
        ({"sub/__init__.py": "", "sub/x.py": "from ..a import f\n", "a.py": "from .sub.x import g\n"},
         ["pkg.a", "pkg.sub.x"]),
    ],
)
def test_the_checker_finds_cycles(tmp_path, files, cycle):
    root = _write(tmp_path / "pkg", {"__init__.py": "", **files})
    assert cycles(import_graph(root)) == [cycle]


def test_the_checker_passes_layers(tmp_path):
    root = _write(tmp_path / "pkg", {"__init__.py": "from .b import g\n", "a.py": "import os\n",
                                     "b.py": "from .a import f\nfrom . import a\n"})
    assert import_graph(root) == {"pkg": {"pkg.b"}, "pkg.a": set(), "pkg.b": {"pkg.a"}}
    assert cycles(import_graph(root)) == []
