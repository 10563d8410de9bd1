"""`merge-study merge` never loses data and never prints a traceback for bad input.

It refuses an output that is, lies inside, or contains an input (symlinks resolved), replaces an existing
output only with --force and only when it is a previous merge, and leaves nothing behind when it fails. Every
refusal is one line on stderr with exit status 2 and nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from study.cli import app
from study.merged_dir import MARKER


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def assert_refused(result, *fragments: str) -> None:
    """Exit 2, exactly one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its content: equal before and after means untouched."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def merge_args(family, out: Path, *extra: str, method: str = "task_arithmetic", models: int = 2) -> list[str]:
    args = ["merge", "--method", method, "--base", str(family.base)]
    for ckpt in family.checkpoints[:models]:
        args += ["--model", str(ckpt)]
    return [*args, "--out", str(out), *extra]


@pytest.fixture
def family(tmp_path, tiny_llama_family):
    """A private copy of the tiny family: tests check that it is never modified."""
    root = tmp_path / "family"
    shutil.copytree(tiny_llama_family.base.parent, root)
    return type(tiny_llama_family)(root / tiny_llama_family.base.name,
                                   [root / c.name for c in tiny_llama_family.checkpoints],
                                   tiny_llama_family.skills, tiny_llama_family.arch)


@pytest.mark.parametrize("where", ["base", "inside_base", "inside_model", "family_root", "symlink_to_base"])
def test_output_never_touches_an_input(tmp_path, family, where):
    link = tmp_path / "link"
    link.symlink_to(family.base, target_is_directory=True)
    out = {"base": family.base, "inside_base": family.base / "merged", "inside_model": family.checkpoints[1] / "m",
           "family_root": family.base.parent, "symlink_to_base": link}[where]
    before = snapshot(family.base.parent)
    result = invoke(*merge_args(family, out))
    assert_refused(result, "input")
    assert snapshot(family.base.parent) == before
    assert not [p for p in family.base.parent.rglob(".*")], "no staging directory left"


def test_output_inside_an_input_reached_through_a_symlink(tmp_path, family):
    link = tmp_path / "link"
    link.symlink_to(family.checkpoints[0], target_is_directory=True)
    result = invoke(*merge_args(family, link / "merged"))
    assert_refused(result, "lies inside the input", str(family.checkpoints[0].resolve()))
    assert not (family.checkpoints[0] / "merged").exists()


def test_existing_directory_is_never_replaced_unless_a_previous_merge(tmp_path, family):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for force in ([], ["--force"]):
        assert_refused(invoke(*merge_args(family, out, *force)), "not a merge output")
    assert snapshot(out) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_existing_file_is_refused(tmp_path, family):
    out = tmp_path / "file"
    out.write_text("data")
    assert_refused(invoke(*merge_args(family, out, "--force")), "existing file")
    assert out.read_text() == "data"


def test_force_replaces_a_previous_merge_and_only_that(tmp_path, family):
    out = tmp_path / "merged"
    assert invoke(*merge_args(family, out, "--set", "lambda=1.0")).exit_code == 0
    assert json.loads((out / MARKER).read_text())["params"]["lambda"] == 1.0
    assert_refused(invoke(*merge_args(family, out, "--set", "lambda=0.5")), "--force")
    first = snapshot(out)

    result = invoke(*merge_args(family, out, "--set", "lambda=0.5", "--force"))
    assert result.exit_code == 0, result.output
    assert json.loads((out / MARKER).read_text())["params"]["lambda"] == 0.5
    assert snapshot(out) != first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

    (out / "eval_results.json").write_text("{}")
    assert_refused(invoke(*merge_args(family, out, "--force")), "eval_results.json")
    assert (out / "eval_results.json").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--method", "slerp"], ["slerp", "3 model"]),
    (["--set", "bogus=1"], ["bogus"]),
    (["--set", "lambda=abc"], ["lambda", "abc"]),
    (["--set", "weight=1,2"], ["weight", "2 values for 3 models"]),
    (["--set", "lambda=[1"], ["--set", "not a value"]),
    (["--set", "lambda=1", "--set", "lambda=2"], ["twice"]),
    (["--set", "lambda"], ["KEY=VALUE"]),
    (["--vocab-mismatch", "drop"], ["refuse or truncate"]),
    (["--device", "nonsense"], ["--device"]),
    (["--method", "no_such_method"], ["no_such_method"]),
])
def test_bad_arguments_are_one_line(tmp_path, family, args, fragments):
    method = args[1] if args[0] == "--method" else "task_arithmetic"
    extra = args[2:] if args[0] == "--method" else args
    out = tmp_path / "out"
    assert_refused(invoke(*merge_args(family, out, *extra, method=method, models=3)), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("missing", ["--base", "--model"])
def test_missing_model_directory(tmp_path, family, missing):
    args = merge_args(family, tmp_path / "out")
    args[args.index(missing) + 1] = str(tmp_path / "nope")
    assert_refused(invoke(*args), str(tmp_path / "nope"))
    assert not (tmp_path / "out").exists()


def test_failed_merge_leaves_nothing(tmp_path, family):
    """A checkpoint with a NaN fails half-way (inside the streaming merge): no output, no staging directory,
    and not the parent directories the merge had to create."""
    shard = family.checkpoints[1] / "model.safetensors"
    tensors = load_file(shard)
    name = sorted(tensors)[-1]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(shard))
    result = invoke(*merge_args(family, tmp_path / "new" / "deeper" / "out"))
    assert_refused(result, "non-finite")
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["family"]


def test_output_modes_follow_the_umask(tmp_path, family):
    old = os.umask(0o027)
    try:
        result = invoke(*merge_args(family, tmp_path / "out"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert os.stat(out).st_mode & 0o777 == 0o750
    modes = {p.name: os.stat(p).st_mode & 0o777 for p in out.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o640}, modes


def test_merge_takes_zoo_names(tmp_path, fake_zoo, tiny_llama_family):
    by_name = tmp_path / "by-name"
    result = invoke("merge", "--method", "task_arithmetic", "--base", "zoo:base", "--model", "zoo:add",
                    "--model", "zoo:sub", "--out", str(by_name), "--zoo", str(fake_zoo.root))
    assert result.exit_code == 0, result.output
    by_path = tmp_path / "by-path"
    assert invoke(*merge_args(tiny_llama_family, by_path)).exit_code == 0
    a, b = load_file(by_name / "model.safetensors"), load_file(by_path / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((by_name / MARKER).read_text())
    assert record["base"] == "zoo:base" and record["models"] == ["zoo:add", "zoo:sub"]


def test_merge_zoo_name_typo_gets_the_canonical_spelling(tmp_path, fake_zoo):
    result = invoke("merge", "--method", "task_arithmetic", "--base", "zoo:base", "--model", "zoo:zoo_add",
                    "--out", str(tmp_path / "out"), "--zoo", str(fake_zoo.root))
    assert_refused(result, "unknown zoo model 'zoo:zoo_add'", "did you mean 'zoo:add'")


def test_merge_with_an_unbuilt_zoo_says_how_to_build_it(tmp_path):
    result = invoke("merge", "--method", "task_arithmetic", "--base", "zoo:base", "--model", "zoo:add",
                    "--out", str(tmp_path / "out"), "--zoo", str(tmp_path / "empty"))
    assert_refused(result, "merge-study zoo build")
