"""A cell's record, and the one vocabulary of outcomes that store, runners, executors, CLI and report share.

A record is what the store keeps for a cell: what was computed (the cell), how it ended (status, scores, error,
reason), and where and with what it ran (worker, host, times, harness and library versions, CPU). It is built,
serialised, checksummed and parsed here only; every other module reads its typed fields, so a renamed field is
a type error in one place rather than a silent ``None`` in five. On disk a record stays one JSON object with a
sha256 checksum over its canonical form (sorted keys, no whitespace).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from study import RESULT_SCHEMA_VERSION, __version__
from study.diagnostics import Diagnostics
from study.fusion.cost import FusionCost
from study.plan import Cell


class Outcome(StrEnum):
    """Every word used for how a cell stands or how running it went.

    A record's status is one of ``RECORD_STATUSES``; ``pending`` is a planned cell without a record; a run
    reports ``computed`` (finished now), ``cached`` (done before), ``claimed_elsewhere`` (a live worker holds
    it), or the failed / not-applicable status it recorded or found.
    """

    DONE = "done"
    FAILED = "failed"
    NOT_APPLICABLE = "not_applicable"
    PENDING = "pending"
    COMPUTED = "computed"
    CACHED = "cached"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"


RECORD_STATUSES = (Outcome.DONE, Outcome.FAILED, Outcome.NOT_APPLICABLE)

TEST, VALIDATION = "test", "validation"
"""The splits a score entry can be on (``Record.scores``' ``split``; absent means test)."""


def mark_split(scores: dict[str, dict[str, Any]], benchmarks: set[str], split: str) -> dict[str, dict[str, Any]]:
    """``scores`` with every entry that counts under one of ``benchmarks`` (itself, or a leaf of such a group)
    marked as on ``split``: how a selection sweep's record tells its validation scores from its test scores."""
    return {t: ({**e, "split": split} if e.get("benchmark", t) in benchmarks else e) for t, e in scores.items()}


class RecordError(ValueError):
    """Bytes that are not an intact record of this schema (truncated, edited, or another version)."""


class SchemaMismatch(RecordError):
    """An intact record of another result-schema version."""

    def __init__(self, schema: Any):
        super().__init__(f"record of result schema {schema}, expected {RESULT_SCHEMA_VERSION}")
        self.schema = schema


def canonical(obj: Any) -> bytes:
    """The bytes a checksum is taken over: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def checksum(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in data.items() if k != "checksum"})).hexdigest()


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@functools.cache
def machine() -> dict[str, str]:
    """CPU model, vector instruction set and library versions of this process's machine (asked once)."""
    from study.machine import describe_machine

    return describe_machine()


@dataclass(frozen=True)
class Timing:
    """Seconds spent merging (or loading), evaluating, and in all; None where the cell did not get that far."""

    merge_s: float | None = None
    eval_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True)
class Record:
    """One cell's result. Build it with ``done``, ``failed`` or ``not_applicable``; read it from the store."""

    cell_id: str
    cell: Cell
    status: Outcome
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per task as lm-eval names it (``study.evaluate.collect_results``): ``metric``, ``score``, ``stderr``, every
    metric and standard error, ``output_type``, and ``benchmark``, the entry of ``evaluation.tasks`` it counts
    under (itself, or its top-level group); a group's own entry adds ``subtasks`` and ``weight_by_size``. Records
    written before ``benchmark`` existed lack it and are read as every task its own benchmark (the same
    numbers for sweeps without groups), so the entries grew keys without a new schema version or cell key.
    In a selection sweep the validation tasks' entries carry ``split: validation`` (``VALIDATION``); an entry
    without ``split`` is a test score, so older records read as they always did (``split_scores``)."""
    error: str = ""
    traceback: str = ""
    reason: str = ""
    timing: Timing = Timing()
    backend: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    host: str = ""
    started: str = ""
    finished: str = ""
    harness_version: str = __version__
    machine: dict[str, str] = field(default_factory=dict)
    samples_sha256: str | None = None
    n_samples: int | None = None
    lm_eval_files: dict[str, str] = field(default_factory=dict)
    """lm-eval's own result files of this evaluation (``study.lm_eval_files``), name → sha256 as stored."""
    merge: dict[str, Any] = field(default_factory=dict)
    """What re-materialises a merge cell's weights bit for bit (``merge-study export``): the merge device,
    ``vocab_mismatch``, the method's version and each input's identity, as this cell was merged."""
    diagnostics: Diagnostics | None = None
    """A merge cell's interference diagnostics (``study.diagnostics``), measured in its merge pass; None for
    other cells, with ``diagnostics: false`` in the sweep, and in records written before they existed (an
    optional field, so those still load under the same schema version and cell keys)."""
    fusion: FusionCost | None = None
    """A fusion cell's cost: teacher and training tokens and seconds (``study.fusion.cost``); None for other cells
    and in records written before fusion existed (an optional field, so those load unchanged)."""
    schema: int = RESULT_SCHEMA_VERSION

    @classmethod
    def new(cls, cell: Cell, status: Outcome, *, worker: str, started: str | None = None, **fields: Any) -> "Record":
        """A record stamped with this machine, this harness version and the finishing time."""
        return cls(cell_id=cell.cell_id, cell=cell, status=Outcome(status), worker=worker, host=platform.node(),
                   started=started or now(), finished=now(), machine=machine(), **fields)

    def split_scores(self, split: str = TEST) -> dict[str, dict[str, Any]]:
        """The ``scores`` entries of one split: ``TEST`` (entries without a ``split``) or ``VALIDATION``."""
        return {t: e for t, e in self.scores.items() if e.get("split", TEST) == split}

    @property
    def message(self) -> str:
        """The one line that says why a cell is not done: its error, or why it does not apply."""
        return self.error or self.reason

    def with_samples(self, sha256: str, n: int) -> "Record":
        return replace(self, samples_sha256=sha256, n_samples=n)

    def with_lm_eval_files(self, digests: dict[str, str]) -> "Record":
        return replace(self, lm_eval_files=dict(digests))

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored on disk, checksum included."""
        data = asdict(self)
        data["cell"] = self.cell.to_json()
        data["status"] = self.status.value
        data["diagnostics"] = None if self.diagnostics is None else self.diagnostics.model_dump(mode="json")
        if self.fusion is None:
            del data["fusion"]  # records of other cells keep the bytes and checksums they had before fusion
        else:
            data["fusion"] = self.fusion.model_dump(mode="json")
        data["checksum"] = checksum(data)
        return data

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: Any) -> "Record":
        """Parse a stored record; ``RecordError`` if it is not intact, ``SchemaMismatch`` if another version's."""
        if not isinstance(data, dict) or data.get("checksum") != checksum(data):
            raise RecordError("checksum mismatch (edited or corrupted)")
        if data.get("schema") != RESULT_SCHEMA_VERSION:
            raise SchemaMismatch(data.get("schema"))
        try:
            fields = {k: v for k, v in data.items() if k != "checksum"}
            return cls(**{**fields, "cell": Cell.from_json(fields["cell"]), "status": Outcome(fields["status"]),
                          "timing": Timing(**(fields.get("timing") or {})),
                          "diagnostics": _diagnostics(fields.get("diagnostics")),
                          "fusion": None if fields.get("fusion") is None else FusionCost.model_validate(fields["fusion"])})
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"not a record of this schema ({exc})") from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Record":
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RecordError("not valid JSON (truncated or edited)") from None
        return cls.from_json(data)


def _diagnostics(data: Any) -> Diagnostics | None:
    return None if data is None else Diagnostics.model_validate(data)
