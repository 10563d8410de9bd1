"""Where cells run: ``local`` (in-process), ``pool`` (worker processes), ``slurm`` (submitit job arrays).

Chosen explicitly by ``--executor`` or the sweep's ``executor:`` block, never auto-detected (submitit picks
Slurm by itself whenever ``srun`` is on PATH; we do not want that).
"""

from __future__ import annotations

from study.errors import UserError
from study.executors.base import Executor, RunSummary
from study.registry import Registry

EXECUTORS: Registry[type] = Registry("executor", {
    "local": "study.executors.local:LocalExecutor",
    "pool": "study.executors.pool:PoolExecutor",
    "slurm": "study.executors.slurm:SlurmExecutor",
})


def get_executor(kind: str) -> Executor:
    if kind not in EXECUTORS:
        raise EXECUTORS.unknown(kind)
    try:
        if kind == "slurm":
            import submitit  # noqa: F401  (imported lazily by the executor: check now that it is installed)
        return EXECUTORS.get(kind)()
    except ImportError as exc:
        extra = " (install the cluster extra: pip install 'merge-study[cluster]')" if kind == "slurm" else ""
        raise UserError(f"executor {kind!r} is not available: {exc}{extra}") from None


__all__ = ["EXECUTORS", "Executor", "RunSummary", "get_executor"]
