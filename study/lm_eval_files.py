"""lm-eval's own result files for every cell, and the directory ``lm-eval --output_path DIR --log_samples`` writes.

A cell's evaluation is one lm-eval run, so the store keeps, beside its record, what lm-eval's CLI would have
written for that run: ``results_<time>.json`` (scores with standard errors, task configs, versions, n-shot,
n-samples, the run's config, environment, tokenizer and task hashes) and one ``samples_<task>_<time>.jsonl`` per
task. They are written by lm-eval's own ``EvaluationTracker`` into a scratch directory and read back, so their
format is lm-eval's by construction, whatever its version. Only the model's name is ours, since a merge has no
hub id: ``merge-study/<base>/<what>-<cell id>``; a ``merge_study`` key in the results file says which cell
it is. ``export_results`` lays a sweep's files out as lm-eval does (one directory per model name), so any tool
that reads lm-eval output directories reads them.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.plan import BASE, ENSEMBLE, SINGLE, Cell

RESULTS_FILE = re.compile(r"results_.+\.json")
SAMPLES_FILE = re.compile(r"samples_.+_.+\.jsonl")


def cell_model_name(cell: Cell) -> str:
    """The model name a cell's lm-eval files carry (lm-eval makes its directory name of it)."""
    what = {BASE: "base", SINGLE: f"single-{cell.checkpoints[0] if cell.checkpoints else ''}",
            ENSEMBLE: f"ensemble-k{cell.k}-{cell.subset_id}"}.get(cell.method,
                                                                  f"{cell.method}-k{cell.k}-{cell.subset_id}")
    return f"merge-study/{cell.base}/{what}-{cell.cell_id[:12]}"


def render_files(results: dict[str, Any], cell: Cell, spec: Any) -> dict[str, bytes]:
    """The files lm-eval's CLI writes for this run (``--output_path --log_samples``), name → bytes.

    ``results`` is ``EvalResult.lm_eval``; its samples are sanitised in place by the tracker, as in lm-eval.
    """
    from lm_eval.loggers import EvaluationTracker

    name = cell_model_name(cell)
    results = dict(results)
    samples = results.pop("samples", None) or {}
    results["config"] = {**results.get("config", {}), "model": name,
                         "model_args": {"pretrained": name, "dtype": spec.dtype}}
    results["merge_study"] = {"cell_id": cell.cell_id, "base": cell.base, "method": cell.method,
                              "params": cell.resolved_params, "k": cell.k, "subset_id": cell.subset_id,
                              "checkpoints": list(cell.checkpoints)}
    with tempfile.TemporaryDirectory(prefix="merge-study-lm-eval-") as tmp:
        tracker = EvaluationTracker(output_path=tmp)
        general = tracker.general_config_tracker
        general.log_experiment_args(model_source=results.pop("model_source", spec.backend),
                                    model_args={"pretrained": name}, system_instruction=None,
                                    chat_template=results.pop("chat_template", None), fewshot_as_multiturn=False)
        general.start_time = time.perf_counter() - max(0.0, time.time() - float(results.get("date") or time.time()))
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results.get("configs", {}):
            if task in samples:
                tracker.save_results_samples(task_name=task, samples=samples[task])
        out = Path(tmp) / str(general.model_name_sanitized)
        files = {p.name: p.read_bytes() for p in sorted(out.glob("*"))} if out.is_dir() else {}
    wanted = 1 + sum(1 for task in results.get("configs", {}) if task in samples)
    if sum(1 for n in files if RESULTS_FILE.fullmatch(n)) != 1 or len(files) != wanted:
        # the tracker logs its own failures and carries on; a cell must not be recorded without its files
        raise RuntimeError(f"lm-eval's EvaluationTracker wrote {sorted(files)} for {name}, expected one results "
                           f"file and {wanted - 1} samples file(s)")
    return files


@dataclass
class ResultsExport:
    """What ``export_results`` did: files written per model directory, and the cells it could not export."""

    written: dict[str, list[Path]]
    not_done: int = 0
    without_files: int = 0


def check_results_dir(out: Path) -> Path:
    """``out`` may not exist yet, or be an lm-eval output directory (model directories holding only
    ``results_*.json`` and ``samples_*.jsonl``: a previous export, or lm-eval's own); never anything else."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a directory")
    if out.is_dir():
        for entry in sorted(out.iterdir()):
            foreign = [p.name for p in entry.iterdir()
                       if not (p.is_file() and (RESULTS_FILE.fullmatch(p.name) or SAMPLES_FILE.fullmatch(p.name)))
                       ] if entry.is_dir() else [entry.name]
            if foreign:
                raise UserError(f"--out {out} holds {entry.name}{'/' + foreign[0] if entry.is_dir() else ''}, "
                                f"which is not lm-eval output: choose a new directory")
    return out


def export_results(store: Any, cells: list[Cell], out: Path) -> ResultsExport:
    """Copy each done cell's lm-eval files to ``out/<model name>/`` as ``lm-eval --output_path out`` lays them."""
    from study.record import Outcome
    from study.store import atomic_write

    out = check_results_dir(out)
    summary = ResultsExport({})
    for cell in cells:
        rec = store.get(cell.cell_id)
        if rec is None or rec.status != Outcome.DONE:
            summary.not_done += 1
            continue
        if not rec.lm_eval_files:
            summary.without_files += 1
            continue
        names = sorted(rec.lm_eval_files)
        results_name = next(n for n in names if RESULTS_FILE.fullmatch(n))
        model_dir = json.loads(store.lm_eval_file(rec, results_name))["model_name_sanitized"]
        paths = []
        for name in names:
            path = out / model_dir / name
            atomic_write(path, store.lm_eval_file(rec, name))
            paths.append(path)
        summary.written[model_dir] = paths
    return summary
