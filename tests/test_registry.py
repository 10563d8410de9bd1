"""The lazy registries (methods, executors, evaluation backends), method versions, and a torch-free listing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.sweeps import REPO
from study.errors import UserError
from study.registry import Registry

CLASH = '''
from study.methods import merge_method


@merge_method("ties", reference="a plugin that reuses a built-in's name")
def ties(base, tensors, *, lambda_: float = 1.0):
    """Not TIES."""
    return base
'''


def _cli(*args: str, pythonpath: list[Path] = (), prefix: list[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *prefix, "-m", "study", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _clash_module(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "clash_plugin.py").write_text(CLASH)
    return root


def test_a_plugin_clashing_with_a_builtin_through_plugin_is_an_error_naming_both(tmp_path):
    res = _cli("--plugin", "clash_plugin", "methods", pythonpath=[_clash_module(tmp_path)])
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("method 'ties' is defined by study.methods.ties:ties (built-in) and by --plugin clash_plugin:ties"
            in res.stderr), res.stderr
    assert "Traceback" not in res.stderr


def test_a_plugin_clashing_with_a_builtin_through_an_entry_point_is_an_error_naming_both(tmp_path):
    site = _clash_module(tmp_path / "site")
    dist = site / "clash_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clash-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[study.methods]\nties = clash_plugin:ties\n")
    res = _cli("methods", pythonpath=[site])
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("method 'ties' is defined by study.methods.ties:ties (built-in) and by entry point clash_plugin:ties"
            in res.stderr), res.stderr


def test_plugin_errors_are_one_line():
    res = _cli("--plugin", "no_such_module_here", "methods")
    assert res.returncode == 2 and "--plugin no_such_module_here: cannot import it" in res.stderr, res.stderr
    res = _cli("--plugin", "json", "methods")
    assert res.returncode == 2 and "--plugin json: the module defines no @merge_method function" in res.stderr


def test_registry_is_lazy_and_rejects_a_second_definition():
    reg: Registry[object] = Registry("widget", {"a": "json:dumps", "b": "no_such_module_xyz:thing"})
    assert reg.names() == ["a", "b"] and "b" in reg  # listing imports nothing
    assert reg.get("a") is json.dumps
    reg.add("a", "json:dumps", "--plugin")  # the same target again is harmless
    with pytest.raises(UserError, match=r"widget 'a' is defined by json:dumps \(built-in\) and by --plugin json:loads"):
        reg.add("a", "json:loads", "--plugin")
    with pytest.raises(UserError, match=r"unknown widget 'c'.*choose one of a, b"):
        reg.get("c")
    with pytest.raises(ImportError):
        reg.get("b")


def test_executors_and_backends_come_from_registries():
    from study.backends import get_backend
    from study.evaluate import Evaluator
    from study.evaluate_vllm import VllmEvaluator
    from study.executors import get_executor
    from study.executors.local import LocalExecutor

    assert get_backend("hf") is Evaluator and get_backend("vllm") is VllmEvaluator
    assert isinstance(get_executor("local"), LocalExecutor)
    with pytest.raises(UserError, match="unknown evaluation backend 'hff'; did you mean 'hf'"):
        get_backend("hff")
    with pytest.raises(UserError, match="unknown executor 'lokal'; did you mean 'local'"):
        get_executor("lokal")


def test_every_builtin_declares_a_version_and_the_listing_shows_it():
    from study.methods.registry import BUILTIN_NAMES, get_method

    assert all(get_method(n).version >= 1 for n in BUILTIN_NAMES)
    listed = json.loads(_cli("methods", "--json").stdout)
    by_name = {m["name"]: m for m in listed}
    assert all(by_name[n]["version"] == get_method(n).version for n in BUILTIN_NAMES)
    text = _cli("methods").stdout
    assert f"ties  (v{get_method('ties').version}, k: 1..inf)" in text


def test_a_plugin_version_defaults_to_one_and_is_checked(tmp_path):
    from study.methods.schema import merge_method

    @merge_method("versioned_example", version=3)
    def versioned(base, tensors, *, lambda_: float = 1.0):
        return base

    @merge_method("unversioned_example")
    def unversioned(base, tensors):
        return base

    assert versioned.__merge_method__.version == 3 and unversioned.__merge_method__.version == 1
    with pytest.raises(TypeError, match="version must be an integer >= 1"):
        merge_method("bad_version", version=0)


def test_listing_methods_imports_no_torch():
    probe = ("import runpy, sys\n"
             "sys.argv = ['merge-study', 'methods', '--json']\n"
             "try:\n    runpy.run_module('study', run_name='__main__')\n"
             "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
             "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().endswith("NO-TORCH"), res.stderr
    assert {"ties", "task_arithmetic", "aim"} <= {m["name"] for m in json.loads(res.stdout)}


def test_the_catalog_matches_the_decorated_functions():
    """``merge-study methods`` lists built-ins from a generated table: it must say what the functions say."""
    from study.methods.describe import CATALOG_FILE, catalog_source

    assert CATALOG_FILE.read_text() == catalog_source(), (
        "study/methods/catalog.py is out of date with the built-in methods: run `python -m study.methods.describe`"
    )


def test_the_catalog_check_catches_a_changed_default(monkeypatch):
    """The comparison above can fail: a changed default changes the generated text."""
    import dataclasses

    from study.methods import describe
    from study.methods.registry import get_method

    info = get_method("ties")
    params = tuple(dataclasses.replace(p, default=0.5) if p.name == "density" else p for p in info.params)
    changed = dataclasses.replace(info, params=params)
    monkeypatch.setattr(describe, "get_method", lambda name: changed if name == "ties" else get_method(name))
    assert describe.CATALOG_FILE.read_text() != describe.catalog_source()
