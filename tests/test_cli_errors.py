"""Bad sweeps fail early: exit status 2, one line naming the file and the problem, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fixtures.sweeps import cli


def sweep_file(tmp_path: Path, family, **changes) -> Path:
    data = {
        "name": "bad",
        "bases": [{"name": "tiny", "model": str(family.base), "checkpoints": [str(p) for p in family.checkpoints]}],
        "methods": [{"name": "task_arithmetic", "params": {"lambda": "1/k"}}],
        "ks": [1, 2],
        "evaluation": {"tasks": [str(tmp_path / "task.yaml")], "limit": 2},
    }
    for key, value in changes.items():
        value(data) if callable(value) else data.__setitem__(key, value)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


CASES = {
    "unknown method": (dict(methods=[{"name": "tie"}]), "unknown method 'tie'; did you mean 'ties'?"),
    "unknown field": (dict(evalution={}), "evalution: unknown field"),
    "k too large": (dict(ks=[1, 9]), "has 3 checkpoints but ks asks for k = [9]"),
    "missing path": (dict(bases=lambda d: d["bases"][0].update(checkpoints=["/nonexistent/ckpt", *d["bases"][0]["checkpoints"][1:]])),
                     "/nonexistent/ckpt: checkpoint directory not found"),
    "bad parameter": (dict(methods=[{"name": "ties", "params": {"density": 1.5}}]), "'density': 1.5 is out of range"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_sweep_is_one_line_exit_2(case, tmp_path, tiny_llama_family):
    changes, expected = CASES[case]
    path = sweep_file(tmp_path, tiny_llama_family, **changes)
    store = tmp_path / "store"
    for command in (["validate", str(path)], ["run", str(path), "--store", str(store)]):
        proc = cli(*command, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    assert not store.exists()
