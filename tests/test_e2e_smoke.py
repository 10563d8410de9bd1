"""The smoke sweep end to end on the real mini zoo: plan → merge → lm-eval → store → report, then resume.

This is the test CI relies on for "one real end-to-end sweep": no mocks, the CLI as a user runs it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures.sweeps import REPO, cli, status_json

SMOKE = REPO / "sweeps" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_store(built_zoo, tmp_path_factory):
    store = tmp_path_factory.mktemp("smoke") / "store"
    t0 = time.perf_counter()
    first = cli("run", str(SMOKE), "--store", str(store))
    return store, first, time.perf_counter() - t0


def records(store: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (store / "records").glob("*/*.json")}


def test_smoke_sweep_runs_every_cell(smoke_store):
    store, first, _ = smoke_store
    counts = status_json(SMOKE, store)
    assert counts["pending"] == 0 and counts["failed"] == 0, first.stdout
    assert counts["done"] == counts["total"] > 10
    assert "cells: " in first.stdout and " computed, 0 cached, 0 failed" in first.stdout
    assert "Loading weights" not in first.stdout + first.stderr  # transformers' bar stays out of the sweep's
    recs = records(store)
    tasks = {t for r in recs.values() for t in r["scores"]}
    assert len(tasks) >= 8
    for r in recs.values():
        for s in r["scores"].values():
            assert 0.0 <= s["score"] <= 1.0


def test_rerun_computes_nothing_and_is_fast(smoke_store):
    store, _, first_s = smoke_store
    before = records(store)
    t0 = time.perf_counter()
    again = cli("run", str(SMOKE), "--store", str(store))
    assert "cells: 0 computed" in again.stdout
    assert records(store) == before
    assert time.perf_counter() - t0 < first_s


def test_base_and_experts_differ_and_merges_are_real(smoke_store):
    store, _, _ = smoke_store
    recs = list(records(store).values())
    by = {}
    for r in recs:
        c = r["cell"]
        by.setdefault(c["method"], []).append(r)
    base = by["base"][0]["scores"]
    avg = lambda s: sum(v["score"] for v in s.values()) / len(s)
    singles = {r["cell"]["checkpoints"][0]: r["scores"] for r in by["single"]}
    assert singles["zoo:capital"]["zoo_capital_mc"]["score"] > base["zoo_capital_mc"]["score"]
    merged = [avg(r["scores"]) for r in by["task_arithmetic"] + by["ties"]]
    assert len(set(round(m, 6) for m in merged)) > 1  # different merges score differently


def test_samples_are_kept_with_token_counts(smoke_store):
    from study.store import Store

    store, _, _ = smoke_store
    st = Store(store)
    rec = next(r for r in records(store).values() if r["cell"]["method"] == "single")
    samples = st.samples(rec["cell_id"])
    gen = [s for s in samples if "response" in s]
    assert gen and all(isinstance(s["n_tokens"], int) for s in gen)
    assert st.verify() == []


def test_sigkill_mid_sweep_then_resume_redoes_nothing(built_zoo, tmp_path):
    store = tmp_path / "store"
    env_cmd = [sys.executable, "-m", "study", "run", str(SMOKE), "--store", str(store)]
    proc = subprocess.Popen(env_cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(records(store) if (store / "records").exists() else {}) < 4:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = records(store)
    assert 4 <= len(done_before)
    cli("run", str(SMOKE), "--store", str(store))
    after = records(store)
    for cid, rec in done_before.items():
        assert after[cid] == rec  # finished cells were not recomputed
    assert status_json(SMOKE, store)["pending"] == 0
    assert not list((store / "claims").glob("*.claim"))


def test_report_regenerated_from_the_smoke_store(smoke_store, tmp_path):
    """CI regenerates the smoke sweep's report: every figure and table exists and is non-empty."""
    store, _, _ = smoke_store
    out = tmp_path / "paper"
    written = [Path(p) for p in cli("report", str(SMOKE), "--store", str(store), "--out", str(out)).stdout.split()]
    names = {p.name for p in written}
    for required in ["scores.parquet", "summary.csv", "lengths.csv", "report.md", "report.html",
                     "gain_curves.png", "p_beat_base.png", "rel_gain_best_single.png", "task_heatmap.png"]:
        assert required in names, required
    for path in written:
        assert path.is_file() and path.stat().st_size > 0, path
    import pandas as pd

    assert len(pd.read_csv(out / "summary.csv")) > 0 and len(pd.read_parquet(out / "scores.parquet")) > 0
