"""The result store: one checksummed record per cell, written atomically, safe for many writers.

Layout under the store directory::

    store.json                        the result-schema version of every record here
    records/ab/<cell_id>.json         the record (``study.record.Record``), with a checksum
    samples/ab/<cell_id>.jsonl.gz     per-sample generations and choices (their sha256 is in the record)
    lm_eval/ab/<cell_id>/             lm-eval's own files of the cell's evaluation: results_<time>.json and
                                      samples_<task>_<time>.jsonl.gz (their sha256 are in the record)
    claims/<cell_id>.claim            who is computing the cell now, until when
    history/<cell_id>.<n>.json        failed records replaced by a retry (append-only: nothing is deleted)
    statistics/ab/<key>.safetensors   data-dependent statistics of the inputs (RegMean's Grams, Fisher
                                      diagonals, AIM's activations; ``study.statistics``), shared by all cells
    plan.json, sweep.yaml             the last plan and sweep that ran here (``status`` and ``report`` need no more)

Every file is written to a temporary name in the same directory, fsynced and renamed into place, so a reader
(or a killed writer) never sees half a record, and a shared filesystem with Slurm tasks on several nodes is
fine. A record whose checksum does not match is treated as missing: ``verify-store`` reports it and the next
run recomputes the cell. A store written under another result-schema version is refused as a whole (one line
saying so), never read as missing records nor mixed with new ones.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from study import RESULT_SCHEMA_VERSION
from study.errors import UserError
from study.record import Outcome, Record, RecordError, canonical

CLAIM_TTL_S = 15 * 60
MARKER = "store.json"


class StoreFullError(UserError):
    """The disk filled while writing a record: nothing partial was left; free space and run again."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name, fsync, rename into place; no partial file on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise StoreFullError(f"{path.parent}: disk full while writing {path.name}; free space and run again "
                                 f"(finished cells are kept)") from None
        raise


@dataclass
class Claim:
    owner: str
    host: str
    pid: int
    expires: float


def worker_id() -> str:
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    job = os.environ.get("SLURM_ARRAY_JOB_ID" if task else "SLURM_JOB_ID")
    slurm = f":slurm{job}" + (f"_{task}" if task else "") if job else ""
    return f"{socket.gethostname()}:{os.getpid()}{slurm}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Store:
    """A directory of cell records.

    ``create=True`` (a run) makes the directory; ``create=False`` (status, report, verify-store) requires it to
    exist and creates nothing. A path that is a file, or a store of another result schema, is a user error.
    """

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: the store path is a file, not a directory: choose another --store")
        if not self.root.is_dir() and not create:
            raise UserError(f"{self.root}: no result store here (nothing has run into it): check --store, or "
                            f"`merge-study run` the sweep first")
        self._check_schema()
        if create:
            for sub in ("records", "samples", "claims", "history"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            if not (self.root / MARKER).is_file():
                atomic_write(self.root / MARKER, canonical({"schema": RESULT_SCHEMA_VERSION}))
        self._remove_dead_temp_files()

    def _stored_schema(self) -> Any:
        """The schema the marker names, else that of any one record (stores from before the marker), else None."""
        try:
            return json.loads((self.root / MARKER).read_bytes())["schema"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for path in (self.root / "records").glob("*/*.json"):
            try:
                return json.loads(path.read_bytes()).get("schema")
            except (OSError, ValueError, AttributeError):
                continue
        return None

    def _check_schema(self) -> None:
        schema = self._stored_schema()
        if schema is not None and schema != RESULT_SCHEMA_VERSION:
            raise UserError(
                f"{self.root}: this store holds results of schema {schema} from another merge-study version; "
                f"this version writes schema {RESULT_SCHEMA_VERSION} and never mixes the two: report it with the "
                f"version that wrote it, or run into a new --store")

    def _temp_files(self) -> list[Path]:
        return (sorted(self.root.glob("lm_eval/*/*/.*.tmp")) + sorted(self.root.glob("*/*/.*.tmp"))
                + sorted(self.root.glob("*/.*.tmp")) + sorted(self.root.glob(".*.tmp")))

    def _remove_dead_temp_files(self) -> None:
        """Delete temporary files of writes killed on this host (``.NAME.HOST.PID.NS.tmp``, PID dead); those
        of other hosts may be writes in progress on a shared filesystem and are left alone."""
        host = socket.gethostname()
        for path in self._temp_files():
            parts = path.name.rsplit(".", 4)
            if len(parts) == 5 and parts[1] == host and parts[2].isdigit() and not _pid_alive(int(parts[2])):
                path.unlink(missing_ok=True)

    def _record_path(self, cell_id: str) -> Path:
        return self.root / "records" / cell_id[:2] / f"{cell_id}.json"

    def _samples_path(self, cell_id: str) -> Path:
        return self.root / "samples" / cell_id[:2] / f"{cell_id}.jsonl.gz"

    def lm_eval_dir(self, cell_id: str) -> Path:
        return self.root / "lm_eval" / cell_id[:2] / cell_id

    @staticmethod
    def _stored_name(name: str) -> str:
        """Per-sample JSONL is kept gzipped (it holds every prompt); the aggregated JSON as lm-eval writes it."""
        return f"{name}.gz" if name.endswith(".jsonl") else name

    def _claim_path(self, cell_id: str) -> Path:
        return self.root / "claims" / f"{cell_id}.claim"

    def get(self, cell_id: str) -> Record | None:
        """The cell's record if present and intact (checksum matches), else None."""
        try:
            return Record.from_bytes(self._record_path(cell_id).read_bytes())
        except (FileNotFoundError, RecordError):
            return None

    def status(self, cell_id: str) -> Outcome:
        """The record's status, or ``pending`` when the cell has no intact record."""
        rec = self.get(cell_id)
        return Outcome.PENDING if rec is None else rec.status

    def put(self, record: Record, samples: list[dict[str, Any]] | None = None,
            lm_eval_files: dict[str, bytes] | None = None) -> None:
        """Write a record (its samples and lm-eval files first, so a record never points at missing files).

        A done record is final; writing over a failed one keeps the old one under ``history/``.
        """
        cell_id = record.cell_id
        if lm_eval_files and self.status(cell_id) != Outcome.DONE:
            record = record.with_lm_eval_files(self._put_lm_eval_files(cell_id, lm_eval_files))
        if samples is not None:
            buf = io.BytesIO()
            with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
                for s in samples:
                    gz.write(canonical(s) + b"\n")
            data = buf.getvalue()
            atomic_write(self._samples_path(cell_id), data)
            record = record.with_samples(hashlib.sha256(data).hexdigest(), len(samples))
        old = self.get(cell_id)
        if old is not None:
            if old.status == Outcome.DONE:
                return
            n = len(list((self.root / "history").glob(f"{cell_id}.*.json")))
            atomic_write(self.root / "history" / f"{cell_id}.{n}.json", canonical(old.to_json()))
        atomic_write(self._record_path(cell_id), record.to_bytes())

    def _put_lm_eval_files(self, cell_id: str, files: dict[str, bytes]) -> dict[str, str]:
        """Write a cell's lm-eval files (files of an earlier, interrupted write of this cell removed first);
        name → sha256 of the stored bytes."""
        where = self.lm_eval_dir(cell_id)
        if where.exists():
            shutil.rmtree(where)
        digests = {}
        for name, data in sorted(files.items()):
            if "/" in name or name.startswith("."):
                raise ValueError(f"not a plain file name: {name!r}")
            if name.endswith(".jsonl"):
                buf = io.BytesIO()
                with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
                    gz.write(data)
                data = buf.getvalue()
            atomic_write(where / self._stored_name(name), data)
            digests[name] = hashlib.sha256(data).hexdigest()
        return digests

    def lm_eval_file(self, record: Record, name: str) -> bytes:
        """One of a record's lm-eval files as lm-eval wrote it (decompressed), checked against the record."""
        path = self.lm_eval_dir(record.cell_id) / self._stored_name(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(f"{path}: missing (run `merge-study verify-store --store {self.root}`)") from None
        if hashlib.sha256(data).hexdigest() != record.lm_eval_files.get(name):
            raise UserError(f"{path}: checksum mismatch (run `merge-study verify-store --store {self.root}`)")
        return gzip.decompress(data) if path.name.endswith(".gz") else data

    def samples(self, cell_id: str) -> list[dict[str, Any]]:
        with gzip.open(self._samples_path(cell_id), "rb") as gz:
            return [json.loads(line) for line in gz if line.strip()]

    def record_paths(self) -> list[Path]:
        return sorted((self.root / "records").glob("*/*.json"))

    def records(self) -> Iterator[Record]:
        for path in self.record_paths():
            rec = self.get(path.stem)
            if rec is not None:
                yield rec

    def verify(self) -> list[tuple[str, str]]:
        """Every problem found: (file, what is wrong). Corrupt records are recomputed by the next run."""
        problems = []
        for path in self._temp_files():
            problems.append((str(path), "temporary file of an interrupted write (never read; safe to delete)"))
        for path in self.record_paths():
            try:
                record = Record.from_bytes(path.read_bytes())
            except RecordError as exc:
                problems.append((str(path), str(exc)))
                continue
            if record.samples_sha256 is not None:
                spath = self._samples_path(record.cell_id)
                if not spath.is_file():
                    problems.append((str(spath), "samples file missing"))
                elif hashlib.sha256(spath.read_bytes()).hexdigest() != record.samples_sha256:
                    problems.append((str(spath), "samples checksum mismatch"))
            for name, digest in record.lm_eval_files.items():
                lpath = self.lm_eval_dir(record.cell_id) / self._stored_name(name)
                if not lpath.is_file():
                    problems.append((str(lpath), "lm-eval file missing"))
                elif hashlib.sha256(lpath.read_bytes()).hexdigest() != digest:
                    problems.append((str(lpath), "lm-eval file checksum mismatch"))
        return problems

    def claim(self, cell_id: str, ttl_s: float = CLAIM_TTL_S) -> bool:
        """Take the cell for this worker; False if another live worker holds it.

        ``O_CREAT | O_EXCL`` makes creation atomic (also on NFS v3+). A claim past its expiry, or one held by a
        dead process on this host, is broken by renaming it away first, so two breakers cannot both win.
        """
        path = self._claim_path(cell_id)
        me = worker_id()
        body = canonical({"owner": me, "host": socket.gethostname(), "pid": os.getpid(), "expires": time.time() + ttl_s})
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                current = self.read_claim(cell_id)
                if current is not None and current.owner == me:
                    return True
                if current is not None and not self._stale(current):
                    return False
                grave = path.with_name(f"{path.name}.stale.{os.getpid()}.{time.monotonic_ns()}")
                try:
                    os.rename(path, grave)
                    grave.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            return True
        return False

    def _stale(self, claim: Claim) -> bool:
        if claim.expires < time.time():
            return True
        return claim.host == socket.gethostname() and not _pid_alive(claim.pid)

    def read_claim(self, cell_id: str) -> Claim | None:
        try:
            d = json.loads(self._claim_path(cell_id).read_bytes())
            return Claim(d["owner"], d["host"], int(d["pid"]), float(d["expires"]))
        except (FileNotFoundError, json.JSONDecodeError, KeyError, ValueError):
            return None

    def refresh_claim(self, cell_id: str, ttl_s: float = CLAIM_TTL_S) -> None:
        """Extend our claim while a long cell runs (a heartbeat), so it is not taken as stale."""
        current = self.read_claim(cell_id)
        if current is not None and current.owner == worker_id():
            body = canonical({**current.__dict__, "expires": time.time() + ttl_s})
            atomic_write(self._claim_path(cell_id), body)

    def break_claim(self, cell_id: str) -> None:
        """Remove a claim whatever its owner: for a coordinator that knows the owner is gone (a cancelled or
        finished Slurm task), so the cell is picked up at once instead of after the claim expires."""
        self._claim_path(cell_id).unlink(missing_ok=True)

    def release(self, cell_id: str) -> None:
        current = self.read_claim(cell_id)
        if current is not None and current.owner == worker_id():
            self._claim_path(cell_id).unlink(missing_ok=True)

    def write_meta(self, name: str, data: bytes) -> None:
        atomic_write(self.root / name, data)

    def read_meta(self, name: str) -> bytes | None:
        """A file written by ``write_meta``, or None when there is none."""
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
