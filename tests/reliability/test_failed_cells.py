"""Faults of one cell's inputs or code: the cell is recorded as failed with a one-line reason that names the
file or tensor, every other cell finishes, ``status`` lists the failures, and ``run --retry-failed`` retries
exactly those cells (after the cause is fixed they succeed).

These run the sweep in this process (``prepare`` + ``run_cells``, the code every executor's workers run, or
the CLI through typer's runner) so a fault can be injected between two cells, at a known point of the sweep.
Each test works on a private copy of the tiny family (copies keep file mtimes, so their identity is the
original's).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from fixtures.reliability import copy_family, invoke, store_records, sweep_data, write_sweep

TENSOR = "model.layers.0.mlp.up_proj.weight"


def run_sweep(sweep: Path, store: Path, *, retry_failed: bool = False,
              on_start: Callable[[Any], None] | None = None) -> tuple[Any, dict[str, int]]:
    from study.prepare import prepare, save_plan
    from study.runner import run_cells
    from study.store import Store

    ctx = prepare(sweep)
    st = Store(store)
    save_plan(ctx, st)
    return ctx, run_cells(ctx, st, ctx.plan.unique_cells(), retry_failed=retry_failed, on_start=on_start)


def by_status(store: Path) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for cid, rec in store_records(store).items():
        out.setdefault(rec["status"], {})[cid] = rec
    return out


def involving(ctx: Any, label: str) -> set[str]:
    return {c.cell_id for c in ctx.plan.unique_cells() if label in c.checkpoints}


def check_status_lists(sweep: Path, store: Path, failed: dict[str, dict]) -> None:
    """``status`` counts the failed cells and prints each with its one-line reason."""
    res = invoke("status", str(sweep), "--store", str(store))
    assert res.exit_code == 0, res.stdout + res.stderr
    assert f"failed={len(failed)}" in res.stdout, res.stdout
    listed = [ln for ln in res.stdout.splitlines() if ln.strip().startswith("failed ")]
    assert len(listed) == len(failed), res.stdout
    for rec in failed.values():
        assert "\n" not in rec["error"] and rec["traceback"].strip().startswith("Traceback")
        assert any(rec["error"] in ln for ln in listed), (rec["error"], res.stdout)


def write_tensor(file: Path, name: str, value: float) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[7] = value
    save_file(tensors, str(file), metadata={"format": "pt"})


@pytest.fixture
def fam(rel_family, tmp_path) -> Any:
    return copy_family(rel_family, tmp_path / "family")


@pytest.fixture
def sweep(fam, rel_tasks, tmp_path) -> Path:
    return write_sweep(tmp_path / "sweep.yaml", sweep_data(fam, rel_tasks))


def test_nan_and_inf_tensors_fail_only_their_cells(fam, sweep, tmp_path, rel_family):
    write_tensor(fam.checkpoints[1] / "model.safetensors", TENSOR, float("nan"))
    write_tensor(fam.checkpoints[2] / "model.safetensors", TENSOR, float("inf"))
    store = tmp_path / "store"
    ctx, counts = run_sweep(sweep, store)
    bad = involving(ctx, str(fam.checkpoints[1])) | involving(ctx, str(fam.checkpoints[2]))
    got = by_status(store)
    assert set(got["failed"]) == bad and len(got["done"]) == 8 - len(bad), counts
    for cid, rec in got["failed"].items():
        assert rec["error"].startswith("MergeInputError: tensor ") and TENSOR in rec["error"], rec["error"]
        assert "non-finite" in rec["error"] and ("ckpt-1" in rec["error"] or "ckpt-2" in rec["error"])
    check_status_lists(sweep, store, got["failed"])

    # Fixed files are new inputs: their cells get new ids (never mistaken for the failed ones) and run.
    for ck in fam.checkpoints[1:]:
        shutil.copy2(next(c for c in rel_family.checkpoints if c.name == ck.name) / "model.safetensors",
                     ck / "model.safetensors")
    ctx2, counts = run_sweep(sweep, store)
    assert counts == {"cached": 8 - len(bad), "computed": len(bad)}, counts
    assert not ({c.cell_id for c in ctx2.plan.unique_cells()} & set(got["failed"]))


def test_truncated_mid_sweep_fails_its_cells_and_retry_after_fixing(fam, sweep, tmp_path, rel_family):
    """Truncated after the early checks, before the file is first read: its cells fail, naming the file.

    Cells are keyed by the checkpoint's identity at planning time, so ``status`` lists them as failed once the
    file is restored (while it is truncated, the same cells would have another identity)."""
    victim = fam.checkpoints[2] / "model.safetensors"
    pristine = rel_family.checkpoints[2] / "model.safetensors"

    def truncate_once(cell: Any) -> None:
        if cell.method == "base":
            victim.write_bytes(pristine.read_bytes()[: pristine.stat().st_size // 2])

    store = tmp_path / "store"
    ctx, counts = run_sweep(sweep, store, on_start=truncate_once)
    bad = involving(ctx, str(fam.checkpoints[2]))
    got = by_status(store)
    assert set(got["failed"]) == bad and len(got["done"]) == 8 - len(bad), counts
    for rec in got["failed"].values():
        assert f"{victim}: truncated safetensors file" in rec["error"], rec["error"]

    # Detected before any work when the file is already truncated at the start: exit 2, nothing run.
    res = invoke("run", str(sweep), "--store", str(store))
    assert res.exit_code == 2 and "truncated safetensors file" in res.stderr, res.stdout + res.stderr

    shutil.copy2(pristine, victim)  # fixed: same bytes and mtime, so the same cells
    check_status_lists(sweep, store, got["failed"])
    done_before = {cid: rec for cid, rec in got["done"].items()}
    res = invoke("run", str(sweep), "--store", str(store))
    assert res.exit_code == 0 and f"0 computed, {len(done_before)} cached, {len(bad)} failed" in res.stdout, res.stdout
    res = invoke("run", str(sweep), "--store", str(store), "--retry-failed")
    assert res.exit_code == 0 and f"{len(bad)} computed, {len(done_before)} cached, 0 failed" in res.stdout, \
        res.stdout + res.stderr
    after = by_status(store)
    assert set(after["done"]) == bad | set(done_before) and "failed" not in after
    assert all(store_records(store)[c] == r for c, r in done_before.items())
    assert len(list((store / "history").glob("*.json"))) == len(bad)  # the failed records, kept


def test_checkpoint_deleted_mid_sweep(fam, sweep, tmp_path):
    victim = fam.checkpoints[0]
    moved = tmp_path / "moved-away"

    def delete_at_first_merge(cell: Any) -> None:
        if cell.kind == "merge" and victim.exists():
            victim.rename(moved)

    store = tmp_path / "store"
    ctx, counts = run_sweep(sweep, store, on_start=delete_at_first_merge)
    bad = {c.cell_id for c in ctx.plan.unique_cells() if c.kind == "merge" and str(victim) in c.checkpoints}
    got = by_status(store)
    assert bad and set(got["failed"]) == bad and len(got["done"]) == 8 - len(bad), counts
    for rec in got["failed"].values():
        assert f"{victim}: checkpoint directory disappeared during the sweep" in rec["error"], rec["error"]

    # While it is gone, cell ids cannot be computed (a checkpoint's identity is part of them): `run` exits 2;
    # `status` answers from the plan the store keeps, and says why it does not use the sweep file's.
    res = invoke("run", str(sweep), "--store", str(store))
    assert res.exit_code == 2 and f"{victim}: checkpoint directory not found" in res.stderr, res.stderr
    res = invoke("status", str(sweep), "--store", str(store), "--json")
    assert res.exit_code == 0 and f"{victim}: checkpoint directory not found" in res.stderr, res.stderr
    assert json.loads(res.stdout)["failed"] == len(bad), res.stdout
    moved.rename(victim)
    check_status_lists(sweep, store, got["failed"])
    _, counts = run_sweep(sweep, store, retry_failed=True)
    assert counts == {"cached": 8 - len(bad), "computed": len(bad)}, counts


PLUGIN = '''
import os
from study.methods.registry import merge_method


@merge_method("flaky", reference="reliability test plugin: raises for k = 3 while its marker file exists")
def flaky(base, tensors, *, lambda_: float = 1.0):
    if len(tensors) == 3 and os.path.exists(os.environ["MS_REL_FLAKY_MARKER"]):
        raise ValueError(f"flaky: refusing k = {len(tensors)} (marker present)\\nsecond line of the message")
    return base + lambda_ * sum(t - base for t in tensors) / len(tensors)
'''


def test_plugin_method_raising_for_one_cell(fam, rel_tasks, tmp_path, monkeypatch):
    from study.methods import registry

    # --plugin registers for the life of the process: keep it out of later tests of this session
    monkeypatch.setattr(registry, "METHODS", registry.METHODS.copy())
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "ms_rel_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    marker = tmp_path / "marker"
    marker.write_text("x")
    monkeypatch.setenv("MS_REL_FLAKY_MARKER", str(marker))
    sweep = write_sweep(tmp_path / "sweep.yaml", sweep_data(fam, rel_tasks, methods=[{"name": "flaky"}]))
    store = tmp_path / "store"

    res = invoke("validate", str(sweep))  # plugins come from entry points or --plugin, never from the sweep
    assert res.exit_code == 2 and "unknown method 'flaky'" in res.stderr, res.stderr

    res = invoke("--plugin", "ms_rel_plugin", "run", str(sweep), "--store", str(store))
    assert res.exit_code == 0 and "7 computed, 0 cached, 1 failed" in res.stdout, res.stdout + res.stderr
    failed = by_status(store)["failed"]
    (rec,) = failed.values()
    assert rec["cell"]["k"] == 3 and rec["error"] == "ValueError: flaky: refusing k = 3 (marker present)"
    assert "second line of the message" in rec["traceback"]
    check_status_lists(sweep, store, failed)

    marker.unlink()  # the bug is fixed
    res = invoke("--plugin", "ms_rel_plugin", "run", str(sweep), "--store", str(store), "--retry-failed")
    assert res.exit_code == 0 and "1 computed, 7 cached, 0 failed" in res.stdout, res.stdout + res.stderr


def test_exception_inside_lm_eval_for_one_cell(fam, sweep, tmp_path, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    real = HFLM.generate_until
    calls = {"n": 0}

    def flaky_generate(self, *a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure inside lm-eval's generate_until")
        return real(self, *a, **k)

    monkeypatch.setattr(HFLM, "generate_until", flaky_generate)
    store = tmp_path / "store"
    ctx, counts = run_sweep(sweep, store)
    assert counts == {"computed": 7, "failed": 1}, counts
    (rec,) = by_status(store)["failed"].values()
    assert rec["error"] == "RuntimeError: injected failure inside lm-eval's generate_until"
    assert "lm_eval" in rec["traceback"]
    check_status_lists(sweep, store, {rec["cell_id"]: rec})

    monkeypatch.setattr(HFLM, "generate_until", real)
    _, counts = run_sweep(sweep, store, retry_failed=True)
    assert counts == {"cached": 7, "computed": 1}, counts
