"""Sweep files are data, remote code is opt-in, plugins come only from installed packages or ``--plugin``.

The CLI-level cases (``!!python/object`` tags, a code string as a parameter, ``mymodule:fn`` as a method)
are rows of the bad-input table in ``test_bad_inputs.py``; this file checks the mechanisms underneath.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures.reliability import copy_family, store_records, sweep_data, write_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text,value", [("1/k", 0.25), ("0.5/k", 0.125), (" 2 / k ", 0.5)])
def test_c_over_k_is_parsed(text, value):
    from study.config import resolve_value

    assert resolve_value(text, 4) == value


@pytest.mark.parametrize("text", ["__import__('os').system('true')/k", "1/k; import os", "k/1", "(1)/k", "1e3/k",
                                  "1/k/k", "lambda k: 1/k", "os.getcwd()"])
def test_anything_else_stays_a_string(text):
    """Never evaluated: a value that is not exactly ``c/k`` is a plain string for the type check to refuse."""
    from study.config import KExpression, resolve_value
    from study.errors import MethodError
    from study.methods.registry import get_method

    assert KExpression.parse(text) is None
    assert resolve_value(text, 4) == text
    with pytest.raises(MethodError, match="expected float"):
        get_method("task_arithmetic").resolve_params({"lambda": text}, n_models=2)


def test_sweep_loading_uses_safe_load(tmp_path):
    from study.config import load_sweep
    from study.errors import ConfigError

    marker = tmp_path / "PWNED"
    for tag in ("!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object:os.PathLike"):
        path = tmp_path / "s.yaml"
        path.write_text(f"name: {tag} ['touch {marker}']\n")
        with pytest.raises(ConfigError, match="python/"):
            load_sweep(path)
    assert not marker.exists()


def test_trust_remote_code_is_off_unless_the_base_opts_in(rel_family, rel_tasks, tmp_path, monkeypatch):
    """The Evaluator loads the base with the base's own flag; checkpoints are read as tensors only, never as
    code; a model directory whose config points at its own code (``auto_map``) does not get it run."""
    import transformers

    from study.prepare import prepare
    from study.runner import CellRunner
    from study.store import Store

    fam = copy_family(rel_family, tmp_path / "family")
    marker = tmp_path / "REMOTE_CODE_RAN"
    for d in (fam.base, fam.checkpoints[0]):
        (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
        cfg = json.loads((d / "config.json").read_text())
        cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        (d / "config.json").write_text(json.dumps(cfg))

    seen: list[bool] = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *a, **k):
        seen.append(k.get("trust_remote_code"))
        return real(cls, *a, **k)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    sweep = write_sweep(tmp_path / "sweep.yaml", sweep_data(fam, rel_tasks, ks=[1]))
    ctx = prepare(sweep)
    assert not any(r.ref.trust_remote_code for r in ctx.models.values())
    runner = CellRunner(ctx, Store(tmp_path / "store"))
    for cell in ctx.plan.unique_cells()[:2]:  # the base and the checkpoint with auto_map
        assert runner.run_one(cell) == "computed"
    assert seen == [False]
    assert all(r["status"] == "done" for r in store_records(tmp_path / "store").values())
    assert not marker.exists(), "a model's own code was run without trust_remote_code"

    data = sweep_data(fam, rel_tasks, ks=[1])
    data["bases"][0]["model"] = {"model": str(fam.base), "trust_remote_code": True}
    ctx = prepare(write_sweep(tmp_path / "opt-in.yaml", data))
    assert ctx.base_model("tiny").ref.trust_remote_code is True


def test_report_lists_models_that_opted_in(rel_family, rel_tasks, tmp_path):
    from study.analysis.provenance import remote_code_models
    from study.config import parse_sweep

    data = sweep_data(rel_family, rel_tasks)
    assert remote_code_models(parse_sweep(data)) == "none"
    ck = str(rel_family.checkpoints[1])
    data["bases"][0]["checkpoints"][1] = {"model": ck, "trust_remote_code": True}
    assert remote_code_models(parse_sweep(data)) == ck


def test_no_source_file_turns_remote_code_on():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "study").rglob("*.py")
                 if "trust_remote_code=True" in p.read_text()]
    assert offenders == []
