"""Statistics on disk: one safetensors file per (model identity, calibration set, statistic), computed once.

A key is the sha256 of the statistic, its version, the model's content digest (``study.identity``), the base
whose architecture and tokenizer ran it, the calibration spec (a file by content) and the device kind, so a
sweep's cells share every statistic of a checkpoint and a changed checkpoint or calibration text recomputes
it. Files are written under a temporary name and renamed (concurrent workers may both compute; the last rename
wins and both are equal). During a merge, :class:`Statistics` reads one tensor's statistic at a time through
``safe_open`` (memory-mapped), never a whole file, and never all checkpoints' at once.

The directory is the sweep store's ``statistics/`` in a sweep (``study.runner``), else
``$MERGE_STUDY_STATISTICS_DIR``, else ``$XDG_CACHE_HOME/merge-study/statistics`` (``~/.cache`` without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.statistics.spec import STATISTIC_VERSION, StatisticRequest

COMPUTED: list[str] = []
"""Keys computed (not found on disk) in this process, in order: tests count them, benches time them."""


def statistics_dir(override: Path | None = None) -> Path:
    if override is not None:
        return Path(override)
    env = os.environ.get("MERGE_STUDY_STATISTICS_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "merge-study" / "statistics"


def statistic_key(request: StatisticRequest, model_identity: str, base_identity: str, device: str) -> str:
    from study.statistics.calibration import calibration_key

    payload = {"version": STATISTIC_VERSION, "statistic": request.statistic, "model": model_identity,
               "architecture": base_identity, "calibration": calibration_key(request.calibration),
               "device": device.split(":")[0]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _identity(source: Any) -> str:
    from study.identity import content_digest

    return content_digest(Path(source.path))


def ensure(request: StatisticRequest, source: Any, base_dir: Path, root: Path, device: str = "cpu") -> Path:
    """The statistic's file for the model ``source`` (run as the base's architecture), computed if absent."""
    from study.identity import content_digest

    key = statistic_key(request, _identity(source), content_digest(Path(base_dir)), device)
    path = root / key[:2] / f"{key}.safetensors"
    if path.is_file():
        return path
    tensors, meta = compute(request, source, base_dir, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in meta.items()})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    COMPUTED.append(key)
    return path


def compute(request: StatisticRequest, source: Any, base_dir: Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the model once for the statistic; returns the tensors and metadata (what, of what, seconds)."""
    from study.statistics.calibration import calibration_texts
    from study.statistics.compute import compute_statistic, load_model

    texts = calibration_texts(request.calibration)
    t0 = time.perf_counter()
    model, tokenizer = load_model(Path(base_dir), source, device)
    tensors = compute_statistic(request.statistic, model, tokenizer, texts, request.calibration.max_tokens, device)
    del model
    meta = {"statistic": request.statistic, "model": str(source.path), "sequences": len(texts),
            "calibration": request.calibration.model_dump_json(), "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return tensors, meta


@dataclass
class Statistics:
    """The statistics a method asked for, read one tensor at a time: ``checkpoints("gram", name)`` is one
    tensor per checkpoint (or None when the statistic has no entry for ``name``), ``base("act_abs_mean", name)``
    the base's."""

    files: dict[tuple[str, str], list[Path]]
    _handles: dict[Path, Any] = field(default_factory=dict)

    def _get(self, path: Path, name: str) -> Any:
        from safetensors import safe_open

        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        handle = self._handles[path]
        return handle.get_tensor(name) if name in handle.keys() else None

    def checkpoints(self, statistic: str, name: str) -> list[Any] | None:
        paths = self.files.get((statistic, "checkpoints"))
        if paths is None:
            raise KeyError(f"no {statistic} of the checkpoints was requested")
        got = [self._get(p, name) for p in paths]
        return None if any(g is None for g in got) else got

    def base(self, statistic: str, name: str) -> Any:
        paths = self.files.get((statistic, "base"))
        if paths is None:
            raise KeyError(f"no {statistic} of the base was requested")
        return self._get(paths[0], name)


def gather(inputs: Any, requests: list[StatisticRequest], root: Path | None = None) -> Statistics:
    """Every requested statistic on disk (computed once each), as a lazily reading ``Statistics``."""
    root = statistics_dir(root)
    base_dir = Path(inputs.base.path)
    files: dict[tuple[str, str], list[Path]] = {}
    for req in requests:
        sources = [inputs.base] if req.of == "base" else list(inputs.checkpoints)
        files[(req.statistic, req.of)] = [ensure(req, s, base_dir, root, inputs.device) for s in sources]
    return Statistics(files)
