"""Every bad input fails early: exit status 2, ONE line naming the file and the problem and what to do, no
model loaded, nothing written to the store.

The table runs the real ``merge-study`` command in-process (typer's runner: same ``app``, same error
wrapper, same exit status) because a subprocess per case would cost ~3 s of imports each; a few cases whose
point is the environment (an extra not installed, the hub offline, a syntax error) also run as a real
subprocess below.

"Loads no model" is checked, not assumed: during every case ``from_pretrained`` of the transformers Auto
classes raises an ``AssertionError`` (not a ``UserError``, so the CLI would not turn it into exit status 2),
and the store directory must not exist afterwards.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from fixtures.reliability import invoke, run_ms, sweep_data, write_sweep


@dataclass
class Ctx:
    """What a case may use: a tmp dir, the families, the standard task pair."""

    tmp: Path
    family: Any
    other_arch: Any
    lora_other: Path
    tasks: list[Path]

    def data(self, **extra: Any) -> dict[str, Any]:
        return sweep_data(self.family, self.tasks, name="bad", **extra)

    def ckpt_copy(self, edit_config: dict[str, Any] | None = None) -> Path:
        dest = self.tmp / "edited-ckpt"
        shutil.copytree(self.family.checkpoints[0], dest)
        if edit_config:
            cfg = json.loads((dest / "config.json").read_text())
            cfg.update(edit_config)
            (dest / "config.json").write_text(json.dumps(cfg))
        return dest

    def with_ckpt(self, path: Path | str) -> dict[str, Any]:
        d = self.data()
        d["bases"][0]["checkpoints"] = [str(path), *d["bases"][0]["checkpoints"][1:]]
        return d

    def task_file(self, cfg: dict[str, Any]) -> Path:
        p = self.tmp / "task_bad.yaml"
        p.write_text(yaml.safe_dump(cfg))
        return p


@dataclass
class Case:
    build: Callable[[Ctx], Any]
    """Returns the sweep data (a dict, written as YAML) or raw YAML text; optionally (data, extra CLI args)."""
    expect: list[str]
    """Fragments the one error line must contain (the problem and, where the message gives one, what to do)."""
    names: str = "sweep"
    """What the line must name: ``sweep`` (the sweep file) or ``store`` (the --store path)."""
    setup: Callable[[Any], None] | None = None
    """Extra monkeypatching (``monkeypatch`` is passed)."""
    after: Callable[[Ctx], None] | None = None
    """An extra check once the command has failed."""
    commands: tuple[str, ...] = ("validate", "run")


def _set(d: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    node[last] = value
    return d


def _drop(d: dict[str, Any], key: str) -> dict[str, Any]:
    d.pop(key)
    return d


def _no_submitit(mp: Any) -> None:
    mp.setitem(sys.modules, "submitit", None)  # `import submitit` now raises ImportError
    mp.delitem(sys.modules, "study.executors.slurm", raising=False)


def _task(ctx: Ctx, data_file: str) -> dict[str, Any]:
    from fixtures.reliability import task_yaml

    return ctx.data(evaluation={"tasks": [str(ctx.task_file(task_yaml("t", data_file, "multiple_choice")))],
                                "limit": 2})


def _truncated(ctx: Ctx) -> dict[str, Any]:
    ck = ctx.ckpt_copy()
    f = ck / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    return ctx.with_ckpt(ck)


def _not_created(name: str) -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        assert not (ctx.tmp / name).exists(), f"{name} was created: a sweep value was executed"
    return check


PYOBJ = "name: !!python/object/apply:os.system ['touch {mark}']\nseed: 0\n"

CASES: dict[str, Case] = {
    "yaml syntax error": Case(lambda c: "name: bad\nbases: [\n  {name: x\nks: [1]\n",
                              ["YAML syntax error", "line "]),
    "python object tag": Case(lambda c: PYOBJ.format(mark=c.tmp / "PWNED"), ["python/object"],
                              after=_not_created("PWNED")),
    "not a mapping": Case(lambda c: "- a\n- b\n", ["must be a YAML mapping"]),
    "unknown top-level field": Case(lambda c: c.data(evalution={}), ["evalution: unknown field", "check its spelling"]),
    "unknown nested field": Case(lambda c: _set(c.data(), "evaluation.limt", 3),
                                 ["evaluation.limt: unknown field", "check its spelling"]),
    "missing required field": Case(lambda c: _drop(c.data(), "evaluation"), ["evaluation: required field is missing"]),
    "unknown method": Case(lambda c: c.data(methods=[{"name": "tie"}]),
                           ["unknown method 'tie'; did you mean 'ties'?", "merge-study methods"]),
    "method named by module path": Case(lambda c: c.data(methods=[{"name": "mymodule:fn"}]),
                                        ["unknown method 'mymodule:fn'", "merge-study methods"]),
    "adapter method that does not exist": Case(lambda c: c.data(methods=[{"name": "peft:os.system"}]),
                                               ["PEFT has no combination_type 'os.system'", "one of"]),
    "unknown parameter": Case(lambda c: c.data(methods=[{"name": "ties", "params": {"densty": 0.5}}]),
                              ["methods[0]", "no parameter 'densty'; did you mean 'density'?"]),
    "wrong parameter type": Case(lambda c: c.data(methods=[{"name": "ties", "params": {"density": "high"}}]),
                                 ["methods[0]", "'density': expected float, got 'high'"]),
    "code in a parameter is a string": Case(
        lambda c: c.data(methods=[{"name": "task_arithmetic",
                                   "params": {"lambda": f"__import__('os').system('touch {c.tmp / 'PWNED'}')"}}]),
        ["methods[0]", "'lambda': expected float, got \"__import__('os')"], after=_not_created("PWNED")),
    "parameter out of range": Case(lambda c: c.data(methods=[{"name": "ties", "params": {"density": 1.5}}]),
                                   ["methods[0]", "'density': 1.5 is out of range"]),
    "k larger than checkpoints": Case(lambda c: c.data(ks=[1, 9]),
                                      ["has 3 checkpoints but ks asks for k = [9]", "lower ks or add checkpoints"]),
    "k below 1": Case(lambda c: c.data(ks=[0, 2]), ["ks: k must be >= 1"]),
    "empty checkpoint list": Case(lambda c: _set(c.data(), "bases.0.checkpoints", []),
                                  ["bases[0].checkpoints", "at least 1"]),
    "duplicate checkpoint": Case(lambda c: _set(c.data(), "bases.0.checkpoints",
                                                [str(c.family.checkpoints[0])] * 2 + [str(c.family.checkpoints[1])]),
                                 ["duplicate checkpoint", str(Path("ckpt-0")), "may appear once"]),
    "base listed as checkpoint": Case(lambda c: c.with_ckpt(c.family.base), ["is also listed as a checkpoint"]),
    "missing local path": Case(lambda c: c.with_ckpt("/nonexistent/ckpt"),
                               ["/nonexistent/ckpt: checkpoint directory not found"]),
    "not a model directory": Case(lambda c: c.with_ckpt(c.tmp), ["no config.json", "not a Hugging Face model"]),
    "hub id while offline": Case(lambda c: c.with_ckpt("no-such-org/no-such-model"),
                                 ["no-such-org/no-such-model", "not in the local Hugging Face cache",
                                  "download it first"]),
    "architectures differ": Case(lambda c: c.with_ckpt(c.other_arch.checkpoints[0]),
                                 ["config model_type is 'qwen3', the base has 'llama'"]),
    "hidden sizes differ": Case(lambda c: c.with_ckpt(c.ckpt_copy({"hidden_size": 48})),
                                ["edited-ckpt", "config hidden_size is 48, the base has 32"]),
    "vocabularies differ": Case(lambda c: c.with_ckpt(c.ckpt_copy({"vocab_size": 9999})),
                                ["edited-ckpt", "config vocab_size is 9999", "vocab_mismatch: truncate"]),
    "truncated checkpoint": Case(_truncated, ["edited-ckpt", "model.safetensors: truncated safetensors file",
                                              "re-download or rebuild it"]),
    "LoRA adapter of another base": Case(lambda c: c.with_ckpt(c.lora_other),
                                         ["LoRA adapter", "base_model_name_or_path is", "but the base is"]),
    "unknown task name": Case(lambda c: _set(c.data(), "evaluation.tasks", ["no_such_task_xyz"]),
                              ["evaluation.tasks", "no_such_task_xyz"]),
    "task file missing": Case(lambda c: _set(c.data(), "evaluation.tasks", [str(c.tmp / "nope.yaml")]),
                              ["nope.yaml not found"]),
    "task data path relative": Case(lambda c: _task(c, "data/missing.jsonl"),
                                    ["task_bad.yaml", "data_files.test", "is relative", "write an absolute path"]),
    "task data path missing": Case(lambda c: _task(c, "/nonexistent/docs.jsonl"),
                                   ["task_bad.yaml", "/nonexistent/docs.jsonl does not exist"]),
    "per_k below 1": Case(lambda c: c.data(subsets={"per_k": 0}), ["subsets.per_k", "greater than or equal to 1"]),
    "unknown executor kind": Case(lambda c: c.data(executor={"kind": "kubernetes"}), ["executor.kind", "'slurm'"]),
    "vllm backend not installed": Case(lambda c: _set(c.data(), "evaluation.backend", "vllm"),
                                       ["vllm is not installed", "backend: hf"], commands=("run",),
                                       setup=lambda mp: mp.setitem(sys.modules, "vllm", None)),
    "executor not installed (flag)": Case(lambda c: (c.data(), ["--executor", "slurm"]),
                                          ["executor 'slurm' is not available", "pip install"],
                                          setup=_no_submitit, commands=("run",)),
    "executor not installed (sweep)": Case(lambda c: c.data(executor={"kind": "slurm"}),
                                           ["executor 'slurm' is not available", "pip install"],
                                           setup=_no_submitit, commands=("run",)),
    "store path is a file": Case(lambda c: (c.data(), ["--store", str(c.tmp / "a-file")]),
                                 ["the store path is a file", "choose another --store"], names="store",
                                 commands=("run",)),
}


@pytest.fixture
def ctx(tmp_path, rel_family, qwen3_family, lora_of_other_base, rel_tasks) -> Ctx:
    return Ctx(tmp_path, rel_family, qwen3_family, lora_of_other_base, rel_tasks)


@pytest.fixture
def no_model(monkeypatch):
    """Make any model or tokenizer load fail loudly (an AssertionError is not a UserError: exit 1, traceback)."""
    import transformers

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was loaded while checking a bad input")

    for name in ("AutoModelForCausalLM", "AutoModel", "AutoTokenizer", "AutoConfig"):
        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", refuse)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, ctx, no_model, monkeypatch):
    case = CASES[name]
    if case.setup:
        case.setup(monkeypatch)
    built = case.build(ctx)
    data, extra = built if isinstance(built, tuple) else (built, [])
    sweep = ctx.tmp / "sweep.yaml"
    sweep.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    if "store path is a file" == name:
        (ctx.tmp / "a-file").write_text("not a store")
    store = ctx.tmp / "store"
    for command in case.commands:
        args = [command, str(sweep)] + (["--store", str(store)] if command == "run" and "--store" not in extra else [])
        result = invoke(*args, *extra)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"{command}: crashed with {result.exception!r}\n{result.stdout}\n{result.stderr}"
        assert result.exit_code == 2, f"{command}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, f"{command}: expected one line on stderr, got:\n{result.stderr}"
        line = lines[0]
        assert line.startswith("error: ") and "Traceback" not in result.stderr
        named = str(sweep) if case.names == "sweep" else str(ctx.tmp / "a-file")
        assert named in line, f"{command}: the line does not name {named}: {line}"
        for fragment in case.expect:
            assert fragment in line, f"{command}: {fragment!r} not in: {line}"
    assert not store.exists(), "a bad input wrote a store directory"
    if case.names == "store":
        assert (ctx.tmp / "a-file").read_text() == "not a store"
    if case.after:
        case.after(ctx)


def test_table_is_complete():
    """The brief's minimum: at least 20 distinct bad inputs."""
    assert len(CASES) >= 20


def _modeling_modules(modules_file: Path) -> list[str]:
    names = modules_file.read_text().split()
    return [m for m in names if (m.startswith("transformers.models.") and ".modeling_" in m)
            or m.startswith(("lm_eval.models", "lm_eval.evaluator"))]


def test_executor_not_installed_in_a_real_process(ctx, fault_shim):
    """submitit made unimportable in a real subprocess by a PYTHONPATH shim: exit 2, one line, no model (no
    modeling module even imported), no store."""
    sweep = write_sweep(ctx.tmp / "sweep.yaml", ctx.data(executor={"kind": "slurm"}))
    store, modules = ctx.tmp / "store", ctx.tmp / "modules.txt"
    proc = run_ms("run", str(sweep), "--store", str(store), shim=fault_shim,
                  env={"MS_FAULT_BLOCK": "submitit", "MS_FAULT_NO_MODEL": "1", "MS_FAULT_MODULES": str(modules)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(sweep) in lines[0] and "executor 'slurm' is not available" in lines[0], proc.stderr
    assert "pip install 'merge-study[cluster]'" in lines[0]
    assert not store.exists()
    loaded = modules.read_text().split()
    assert "submitit" not in loaded and "study.prepare" in loaded
    assert _modeling_modules(modules) == []
