"""Faults of the process and the disk: SIGKILL at seeded points, a full disk, a corrupted record, two runners
on one store, stale claims. In each, the store ends equal to that of an uninterrupted run (``reference_store``:
same cell ids, same scores, same samples), nothing partial is ever visible, and nothing finished is redone.

Kills and concurrent runners are real ``merge-study run`` subprocesses (the kill points are injected by the
``sitecustomize`` shim of ``fixtures/reliability.py``); runs that need no separate process (a resume, the disk
filling up) use the same CLI in this process, which saves ~7 s of imports each on a 2-core machine.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from fixtures.reliability import comparable, invoke, popen_ms, record_bytes, run_ms, store_records

QUIET = {"TQDM_DISABLE": "1"}


def verify_clean(store: Path) -> None:
    """What ``verify-store`` checks (its CLI is run in the corrupted-record test; in-process here, to save a
    process start per check)."""
    from study.store import Store

    assert Store(store).verify() == []


def kill_points(seed: int) -> list[tuple[str, int]]:
    """One kill in each phase, at seeded positions: mid-write, mid-evaluation, mid-merge.

    Each round's process reaches its kill point before the sweep ends (the test asserts it: exit by SIGKILL)
    and finishes at least one cell first: the merge kill falls in the second merge cell (a merge of the tiny
    family reads 21 tensors), whatever cells earlier rounds left.
    """
    rng = random.Random(seed)
    return [("write", rng.randint(2, 3)), ("eval", rng.randint(2, 3)), ("merge", rng.randint(25, 40))]


def test_sigkill_at_seeded_points_then_resume(rel_sweep, reference_store, fault_shim, tmp_path):
    store = tmp_path / "store"
    finished: dict[str, bytes] = {}
    for phase, nth in kill_points(seed=8):
        proc = run_ms("run", str(rel_sweep), "--store", str(store), shim=fault_shim,
                      env={**QUIET, "MS_FAULT_KILL": f"{phase}:{nth}"})
        assert proc.returncode == -9, f"kill point {phase}:{nth} not reached:\n{proc.stdout}\n{proc.stderr}"
        now = record_bytes(store)
        for cid, data in finished.items():
            assert now[cid] == data, f"finished cell {cid} was rewritten after a kill at {phase}:{nth}"
        assert len(now) > len(finished), f"no progress in the round killed at {phase}:{nth}"
        finished = now
        for rec in store_records(store).values():  # every visible record is whole and checksummed
            assert rec["status"] == "done"
        others = [p.name for p in (store / "records").rglob("*") if p.is_file() and p.suffix != ".json"]
        assert all(n.startswith(".") and n.endswith(".tmp") for n in others), others  # a killed write's temp
        verify_clean(store)
    final = invoke("run", str(rel_sweep), "--store", str(store))
    assert final.exit_code == 0, final.stdout + final.stderr
    n_left = 8 - len(finished)
    assert f"cells: {n_left} computed, {len(finished)} cached" in final.stdout, final.stdout
    after = record_bytes(store)
    assert {cid: after[cid] for cid in finished} == finished, "a finished cell was recomputed"
    assert comparable(store) == comparable(reference_store)
    verify_clean(store)
    assert not list((store / "claims").glob("*.claim")), "claims of killed runs were left behind"
    assert not list((store / "history").iterdir()), "a done cell was written twice"


def test_disk_full_while_writing_a_record(rel_sweep, reference_store, tmp_path, monkeypatch):
    """ENOSPC from the fsync of the third record's temporary file (the store's own code path, injected below it)."""
    import errno
    import os

    real_fsync = os.fsync
    records_synced = {"n": 0}

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if f"{os.sep}records{os.sep}" in path:
            records_synced["n"] += 1
            if records_synced["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
        real_fsync(fd)

    store = tmp_path / "store"
    monkeypatch.setattr(os, "fsync", fsync)
    res = invoke("run", str(rel_sweep), "--store", str(store))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert res.exit_code == 2, res.stdout + res.stderr
    # stderr also carries the libraries' progress bars (in-process, TQDM_DISABLE comes too late); ours is one line
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and res.stderr.strip().endswith(lines[0]) and "Traceback" not in res.stderr, res.stderr
    assert "disk full" in lines[0] and "free space and run again" in lines[0], lines[0]
    assert str(store / "records") in lines[0]
    assert len(store_records(store)) == 2, "the run did not stop at the full disk"
    assert not [p for p in (store / "records").rglob("*") if p.is_file() and p.suffix != ".json"], \
        "a partial (temporary) record file was left behind"
    assert not list((store / "claims").glob("*.claim"))
    verify_clean(store)
    before = record_bytes(store)
    again = invoke("run", str(rel_sweep), "--store", str(store))
    assert again.exit_code == 0 and "cells: 6 computed, 2 cached" in again.stdout, again.stdout + again.stderr
    assert {c: record_bytes(store)[c] for c in before} == before
    assert comparable(store) == comparable(reference_store)


def test_corrupted_records_are_reported_and_recomputed(rel_sweep, reference_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(reference_store, store)
    paths = sorted((store / "records").glob("*/*.json"))
    edited, truncated = paths[0], paths[1]
    rec = json.loads(edited.read_text())
    task = next(iter(rec["scores"]))
    rec["scores"][task]["score"] = 1.0 - rec["scores"][task]["score"] + 0.125
    edited.write_text(json.dumps(rec, indent=1, sort_keys=True))
    truncated.write_bytes(truncated.read_bytes()[:100])
    intact = {c: b for c, b in record_bytes(store).items() if c not in (edited.stem, truncated.stem)}

    proc = run_ms("verify-store", "--store", str(store))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{edited}: checksum mismatch" in proc.stdout and f"{truncated}: not valid JSON" in proc.stdout
    assert "8 records, 2 problem(s)" in proc.stdout

    st = invoke("status", str(rel_sweep), "--store", str(store), "--json")
    assert json.loads(st.stdout)["pending"] == 2, st.stdout + st.stderr
    again = invoke("run", str(rel_sweep), "--store", str(store))
    assert again.exit_code == 0 and "cells: 2 computed, 6 cached" in again.stdout, again.stdout + again.stderr
    assert {c: record_bytes(store)[c] for c in intact} == intact
    assert comparable(store) == comparable(reference_store)
    verify_clean(store)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_two_runners_at_once_compute_each_cell_once(rel_sweep, reference_store, tmp_path):
    """Started together on one store; one cell carries a dead local worker's claim, one an expired claim."""
    store = tmp_path / "store"
    cells = sorted(store_records(reference_store))
    claims = store / "claims"
    claims.mkdir(parents=True)
    host = socket.gethostname()
    dead = _dead_pid()
    stale = {cells[0]: {"owner": f"{host}:{dead}", "host": host, "pid": dead, "expires": time.time() + 3600},
             cells[1]: {"owner": "elsewhere:1", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}}
    for cid, claim in stale.items():
        (claims / f"{cid}.claim").write_text(json.dumps(claim))

    procs = [popen_ms("run", str(rel_sweep), "--store", str(store), env=QUIET) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    computed = []
    for out, _ in outs:
        line = next(ln for ln in out.splitlines() if ln.startswith("cells: "))
        computed.append(int(line.split()[1]))
    assert sum(computed) == 8, f"cells computed by the two runners: {computed} (a cell was computed twice)"
    recs = store_records(store)
    assert sorted(recs) == cells
    assert not list((store / "history").iterdir()), "a cell was written twice"
    workers = {r["worker"] for r in recs.values()}
    pids = {str(p.pid) for p in procs}
    assert {w.split(":")[1] for w in workers} <= pids, workers
    assert recs[cells[0]]["worker"].split(":")[1] in pids  # the dead worker's claim was taken over
    assert not list(claims.glob("*.claim"))
    assert comparable(store) == comparable(reference_store)
