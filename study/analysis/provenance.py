"""Where a report's numbers came from: package versions, the repository's commit, the sweep hash, the store.

Versions are read from installed distribution metadata (importing torch to ask it would take seconds); the
commit is asked of git read-only and is simply absent outside a checkout.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

import study

DISTRIBUTIONS = ["merge-study", "torch", "transformers", "lm_eval", "mergekit", "peft", "tokenizers", "pandas",
                 "numpy", "matplotlib", "seaborn"]


def package_versions() -> dict[str, str]:
    out = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(path: Path | None = None) -> str:
    """``HEAD`` of the repository holding the harness, with ``-dirty`` if files changed; "unknown" if none."""
    where = str(path or Path(study.__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (no commit)"
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"


def remote_code_models(sweep: Any) -> str:
    """Models whose own Python code the run was allowed to execute (``trust_remote_code: true``), or "none"."""
    refs = [r for b in sweep.bases for r in (b.model, *b.checkpoints) if r.trust_remote_code]
    return ", ".join(dict.fromkeys(r.label for r in refs)) or "none"


def provenance(ctx: Any, store: Any, outcomes: pd.DataFrame, records: dict[str, dict[str, Any] | None]) -> list[tuple[str, str]]:
    """(item, value) pairs for the report's provenance section."""
    unique = outcomes.drop_duplicates("cell_id")
    wall = float(pd.to_numeric(unique.total_s, errors="coerce").fillna(0).sum())
    finished = sorted(r["finished"] for r in records.values() if r and r.get("finished"))
    rows = [("sweep", ctx.sweep.name), ("sweep file", str(ctx.source) if ctx.source else "(in memory)"),
            ("sweep hash", ctx.plan.sweep_hash), ("store", str(Path(store.root).resolve())),
            ("harness commit", git_commit()),
            ("trust_remote_code (models that opted in)", remote_code_models(ctx.sweep)),
            ("cells in the plan (unique)", str(len(unique))),
            ("total wall time of recorded cells", f"{wall:.1f} s ({wall / 3600:.2f} h)"),
            ("last cell finished", finished[-1] if finished else "—"),
            ("report generated", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))]
    rows += [(f"version of {name}", v) for name, v in package_versions().items()]
    return rows
