"""Every module of the package imports on its own, in a fresh interpreter: no import cycle that only works
in one order, no module that needs another to have been imported first."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


from fixtures.sweeps import REPO

MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in (REPO / "study").rglob("*.py")
    if p.name != "__main__.py"
)


def test_each_module_imports_alone_in_a_fresh_interpreter():
    probe = ("import importlib, sys\n"
             "failed = []\n"
             "for m in sys.argv[1:]:\n"
             "    import subprocess\n"
             "    r = subprocess.run([sys.executable, '-c', f'import {m}'], capture_output=True, text=True)\n"
             "    if r.returncode:\n"
             "        failed.append(m + ': ' + (r.stderr.strip().splitlines() or ['?'])[-1])\n"
             "print('\\n'.join(failed))\n")
    res = subprocess.run([sys.executable, "-c", probe, *MODULES], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"modules that fail to import alone:\n{res.stdout}"


def _imports(module: str) -> set[str]:
    """The ``study`` modules that ``module`` imports, at the top or inside functions, with their parent packages
    (importing ``study.a.b`` runs ``study/a/__init__.py`` first). Registry targets (``"module:attr"`` strings)
    are not imports: they are resolved by name on use."""
    path = REPO / Path(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    own_parents = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    return (with_parents & set(MODULES)) - own_parents - {module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycle():
    """Lazy (in-function) imports count too: a cycle that only works because one side imports late is still
    two modules that cannot be understood, or moved, apart."""
    assert _cycles({m: _imports(m) for m in MODULES}) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
