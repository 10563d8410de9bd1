"""Where a report's numbers came from: the repository's commit, the sweep hash, the store, the zoo, and the
machines and library versions the cells ran with.

The runs' CPU, instruction set and torch / transformers / lm-eval versions come from the records (each record
stamps its machine), since the report may be made elsewhere; this process's versions are read from installed
distribution metadata (importing torch to ask it would take seconds). The commit is asked of git read-only,
before the report writes anything (a report inside the checkout would otherwise make it ``-dirty``), and is
simply absent outside a checkout. ``provenance.json`` next to the report keeps the zoo digest, so the next
report of that directory can say when the zoo changed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

import study
from study.machine import package_version

DISTRIBUTIONS = ["merge-study", "torch", "transformers", "lm_eval", "mergekit", "peft", "tokenizers", "pandas",
                 "numpy", "matplotlib", "seaborn"]


def package_versions() -> dict[str, str]:
    return {name: package_version(name) for name in DISTRIBUTIONS}


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


def code_execution_rows(sweep: Any) -> list[tuple[str, str]]:
    """A row when tasks were allowed to execute model-written code (``evaluation.allow_code_execution``)."""
    evaluation = sweep.evaluation
    if not evaluation.allow_code_execution:
        return []
    return [("code execution (evaluation.allow_code_execution)",
             f"ON: tasks could execute code the models wrote (tasks: {', '.join(evaluation.tasks)})")]


PROVENANCE_FILE = "provenance.json"


def previous_zoo(out_dir: Path) -> str | None:
    """The zoo digest an earlier report in ``out_dir`` was made with: from its ``provenance.json``, else from the
    "zoo digest" row of its report.md; None when there is no earlier report or it names no zoo."""
    try:
        return json.loads((out_dir / PROVENANCE_FILE).read_text()).get("zoo")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        match = re.search(r"^\|\s*zoo digest\s*\|\s*([^|\s]+)\s*\|", (out_dir / "report.md").read_text(), re.M)
    except OSError:
        return None
    return match.group(1) if match else None


def run_machines(records: dict[str, Any]) -> dict[str, str]:
    """Each machine field of the records (cpu, isa, torch, ...) → its distinct values, joined with "; "."""
    values: dict[str, list[str]] = {}
    for rec in records.values():
        for key, value in (rec.machine if rec is not None else {}).items():
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    return {key: "; ".join(sorted(v)) for key, v in values.items()}


def zoo_rows(zoo: str | None, before: str | None) -> list[tuple[str, str]]:
    if zoo is None:
        return []
    rows = [("zoo digest", zoo)]
    if before is not None and before != zoo:
        rows.append(("zoo differs from the previous report here", f"yes: that report used {before}"))
    return rows


def provenance(ctx: Any, store: Any, outcomes: pd.DataFrame, records: dict[str, Any], *, commit: str,
               zoo_before: str | None = None) -> list[tuple[str, str]]:
    """(item, value) pairs for the report's provenance section; ``commit`` read before anything was written."""
    unique = outcomes.drop_duplicates("cell_id")
    wall = float(pd.to_numeric(unique.total_s, errors="coerce").fillna(0).sum())
    finished = sorted(r.finished for r in records.values() if r is not None and r.finished)
    machines = run_machines(records)
    rows = [("sweep", ctx.sweep.name), ("sweep file", str(ctx.source) if ctx.source else "(in memory)"),
            ("sweep hash", ctx.plan.sweep_hash), ("store", str(Path(store.root).resolve())),
            ("harness commit", commit), *zoo_rows(ctx.zoo, zoo_before),
            ("trust_remote_code (models that opted in)", remote_code_models(ctx.sweep)),
            *code_execution_rows(ctx.sweep),
            ("cells in the plan (unique)", str(len(unique))),
            ("total wall time of recorded cells", f"{wall:.1f} s ({wall / 3600:.2f} h)"),
            ("last cell finished", finished[-1] if finished else "—"),
            ("report generated", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))]
    names = {"cpu": "CPU model", "isa": "instruction set", "python": "Python", "torch": "torch",
             "transformers": "transformers", "lm_eval": "lm-eval"}
    rows += [(f"{names.get(key, key)} of the runs", value) for key, value in machines.items()]
    rows += [(f"version of {name}", v) for name, v in package_versions().items()]
    return rows
