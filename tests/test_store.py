"""The store: atomic checksummed records, append-only history, claims that expire."""

from __future__ import annotations

import errno
import json
import os

import pytest

from study.errors import UserError
from study.plan import Cell
from study.record import Outcome, Record
from study.store import Store, StoreFullError

DONE, FAILED = Outcome.DONE, Outcome.FAILED


def rec(cell_id: str, status: Outcome = DONE, **kw) -> Record:
    cell = Cell(cell_id, "b", "base", {}, {}, 0, 0, ())
    return Record(cell_id=cell_id, cell=cell, status=status, scores={"t": {"metric": "acc", "score": 0.5}}, **kw)


def test_put_get_and_samples(tmp_path):
    st = Store(tmp_path)
    st.put(rec("abc123"), [{"task": "t", "response": "hi", "n_tokens": 2}])
    got = st.get("abc123")
    assert got.status == DONE and got.n_samples == 1
    assert st.samples("abc123") == [{"task": "t", "response": "hi", "n_tokens": 2}]
    assert st.verify() == []


def test_done_is_final_and_failed_goes_to_history(tmp_path):
    st = Store(tmp_path)
    st.put(rec("c1", FAILED, error="boom"))
    st.put(rec("c1"))
    assert st.status("c1") == DONE
    assert len(list((tmp_path / "history").glob("c1.*.json"))) == 1
    st.put(rec("c1", FAILED))
    assert st.status("c1") == DONE


def test_corrupt_record_is_detected_and_treated_as_missing(tmp_path):
    st = Store(tmp_path)
    st.put(rec("dead01"))
    path = tmp_path / "records" / "de" / "dead01.json"
    data = json.loads(path.read_text())
    data["scores"]["t"]["score"] = 0.9
    path.write_text(json.dumps(data))
    assert st.get("dead01") is None
    assert "checksum mismatch" in st.verify()[0][1]
    path.write_text(path.read_text()[:20])
    assert "not valid JSON" in st.verify()[0][1]


def test_disk_full_leaves_nothing_partial(tmp_path, monkeypatch):
    st = Store(tmp_path)
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreFullError, match="disk full"):
        st.put(rec("ff0001"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert st.get("ff0001") is None
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "ff0001" in p.name]


def test_store_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Store(f)


def test_claims_exclude_and_expire(tmp_path):
    st = Store(tmp_path)
    assert st.claim("c9")
    assert st.claim("c9")  # re-entrant for the same worker
    claim_file = tmp_path / "claims" / "c9.claim"
    other = json.loads(claim_file.read_text())
    other.update(owner="otherhost:1", host="otherhost", pid=1)
    claim_file.write_text(json.dumps(other))
    assert not st.claim("c9")  # a live claim of another worker
    other["expires"] = 0
    claim_file.write_text(json.dumps(other))
    assert st.claim("c9")  # expired: taken over
    st.release("c9")
    assert not claim_file.exists()


def test_claim_of_dead_local_process_is_stale(tmp_path):
    import socket
    import subprocess
    import sys

    st = Store(tmp_path)
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    (tmp_path / "claims" / "c7.claim").write_text(json.dumps(
        {"owner": f"{socket.gethostname()}:{dead_pid}", "host": socket.gethostname(), "pid": dead_pid, "expires": 9e12}))
    assert st.claim("c7")
