"""constraints.txt pins the whole installed stack (torch excepted) within pyproject's ranges, and the install
lines of README and .ci/run use it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INSTALL = 'pip install -c constraints.txt torch==2.13.0 -e ".[dev]"'


def pins() -> dict[str, str]:
    out = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.+!-]+", version), f"not an exact pin: {line}"
            out[canonicalize_name(name)] = version
    return out


def closure(root: str, extras: set[str]) -> set[str]:
    """Every distribution that installing ``root[extras]`` brings in here (markers evaluated)."""
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(root, frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            env_ok = req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (wanted or {""}))
            item = (canonicalize_name(req.name), frozenset(req.extras))
            if env_ok and item not in visited:
                visited.add(item)
                todo.append((req.name, item[1]))
    return {name for name, _ in visited}


def test_pins_are_exact_and_leave_torch_to_the_command_line():
    p = pins()
    assert "torch" not in p and "merge-study" not in p
    assert len(p) > 50


def test_every_installed_dependency_is_pinned():
    needed = closure("merge-study", {"dev"}) - {"torch"}
    missing = sorted(needed - set(pins()))
    assert not missing, f"constraints.txt lacks {missing}: run scripts/update_constraints.sh"


def test_pins_satisfy_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    p = pins()
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(text)
        if canonicalize_name(req.name) != "torch":
            assert req.specifier.contains(p[canonicalize_name(req.name)]), (text, p[canonicalize_name(req.name)])


def test_install_lines_use_the_constraints():
    readme = (REPO / "README.md").read_text()
    assert readme.count(INSTALL) >= 2
    assert INSTALL in (REPO / ".ci" / "run").read_text()
    assert "pip install torch" not in readme
