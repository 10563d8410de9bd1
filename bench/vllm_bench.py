"""Per-cell cost of the vLLM backend: a fresh engine per cell (the old way) vs one resident engine (VllmEvaluator).

Run it with the main venv; the measurement itself runs in the vLLM venv of ``scripts/vllm_env.sh``
(``.venv-vllm``), which this script starts as ``--inner`` (one process per model family).

A, subprocess per cell (what the code did before the resident engine): write the cell's weights as a model
directory to scratch, start a fresh Python process that starts a vLLM engine on it and scores it with lm-eval's
vLLM model, exit. Timed from the parent: write + process start + engine start + score.

B, resident engine: one ``VllmEvaluator`` started once (its start is reported on its own, not per cell); each
cell swaps the weights in place and scores. Timed: swap + score.

The same cells (the base, then task_arithmetic merges of two experts at different λ), in the same order, run
as A then B, repeated (A/B/A/B), so a drift in machine load hits both; the JSON gives median, min and max per
cell. Every A and B score of a cell must agree; ``max_score_diff_vs_hf`` is the largest |B − HF backend| task
score over the cells (``study.evaluate.Evaluator`` on the same weights). No thresholds are asserted here.

    python bench/vllm_bench.py --quick                 # the mini zoo: 3 cells, 3 repetitions (about 4 min on 2 cores)
    python bench/vllm_bench.py --models zoo smollm2    # + SmolLM2-135M, 3 repetitions (~7 min for SmolLM2)

SmolLM2 and its two variants come from ``tests/smollm2.py`` (cached by the slow tier; built there on first use).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
LAMBDAS = (0.5, 1.0, 0.3)


# --- inside the vLLM venv -----------------------------------------------------------------------------------

def _family(model: str) -> tuple[Path, list[Path]]:
    """(base directory, two expert directories) of the model family."""
    if model == "zoo":
        from study.zoo import load_zoo

        zoo = load_zoo()
        return zoo.model("base"), [zoo.model("add"), zoo.model("capital")]
    sys.path.insert(0, str(REPO / "tests"))
    import smollm2

    base, fulls, _ = smollm2.variants(2)
    return base, fulls


def _load(path: Path) -> dict[str, Any]:
    from study.tensors import SafetensorsSource

    src = SafetensorsSource(path)
    return {n: src.get(n) for n in src.names()}


def _cells(model: str, n_merges: int) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """The base, then task_arithmetic of the two experts at ``LAMBDAS`` (weights as the runner hands them)."""
    base_dir, experts = _family(model)
    base = _load(base_dir)
    a, b = (_load(e) for e in experts)
    cells = [("base", base)]
    for lam in LAMBDAS[:n_merges]:
        cells.append((f"task_arithmetic λ={lam}", {n: base[n] + lam * ((a[n] - base[n]) + (b[n] - base[n])) for n in base}))
    return base_dir, cells


def _spec(limit: int, backend: str) -> Any:
    from study.config import EvaluationSpec

    return EvaluationSpec(tasks=["zoo:all"], limit=limit, batch_size=32, max_gen_toks=32, backend=backend)


def _scores(result: Any) -> dict[str, float]:
    return {t: s["score"] for t, s in result.scores.items()}


def fresh_cell(model_dir: Path, limit: int, spawned: float) -> None:
    """The A child: a fresh engine on ``model_dir``, score, print the scores and its phases as JSON, exit.

    Phases (wall clock, from the parent's spawn): ``python_s`` interpreter start and this script's imports,
    ``import_s`` torch, vLLM and lm-eval, ``engine_s`` the engine's start (and the tasks built), ``score_s`` the
    evaluation. ``os._exit`` skips the interpreter's teardown of the engine, which only makes A look cheaper.
    """
    t0 = time.time()
    import vllm  # noqa: F401
    from lm_eval.models import vllm_causallms  # noqa: F401

    from study.evaluate import resolve_tasks
    from study.evaluate_vllm import VllmEvaluator

    t1 = time.time()
    spec = _spec(limit, "vllm")
    ev = VllmEvaluator(model_dir, spec, resolve_tasks(spec.tasks))
    t2 = time.time()
    scores = _scores(ev.evaluate(None))
    t3 = time.time()
    phases = {"python_s": t0 - spawned, "import_s": t1 - t0, "engine_s": t2 - t1, "score_s": t3 - t2}
    print(json.dumps({"scores": scores, "phases": phases}), flush=True)
    os._exit(0)


class _Phases:
    """Wall time of the resident path's parts, per cell: the weight swap (``reload_weights``), the prefix-cache
    reset, the model's own calls inside lm-eval (``loglikelihood``, ``generate_until``: tokenising, batching and
    the forward passes), the rest of lm-eval's ``evaluate`` (building requests, filters, metrics, bootstrap) and
    turning its results into scores and samples (``collect_results``)."""

    def __init__(self, ev: Any):
        import study.evaluate_vllm as ev_module

        self.now: dict[str, float] = {}
        llm = ev.lm.model
        for name in ("reset_prefix_cache", "collective_rpc"):
            setattr(llm, name, self._timed(getattr(llm, name), "prefix_reset_s" if name == "reset_prefix_cache"
                                           else "swap_s"))
        for name in ("loglikelihood", "generate_until"):
            setattr(ev.lm, name, self._timed(getattr(ev.lm, name), "model_calls_s"))
        ev_module.run_lm_eval = self._timed(ev_module.run_lm_eval, "lm_eval_s")
        ev_module.collect_results = self._timed(ev_module.collect_results, "collect_s")

    def _timed(self, fn: Any, key: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.now[key] = self.now.get(key, 0.0) + time.perf_counter() - t0
        return call

    def take(self) -> dict[str, float]:
        out = {k: self.now.get(k, 0.0) for k in ("swap_s", "prefix_reset_s", "model_calls_s", "lm_eval_s", "collect_s")}
        out["lm_eval_other_s"] = out.pop("lm_eval_s") - out["model_calls_s"]
        self.now = {}
        return out


def _summary(times: list[float]) -> dict[str, float]:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3), "max_s": round(max(times), 3)}


def _medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]} if rows else {}


def inner(model: str, limit: int, reps: int, n_merges: int) -> None:
    """Measure A and B on one model family; print one JSON line."""
    from study.evaluate import Evaluator, resolve_tasks
    from study.evaluate_vllm import VllmEvaluator, configure_vllm_environment, write_model_dir

    configure_vllm_environment()
    base_dir, cells = _cells(model, n_merges)
    spec = _spec(limit, "vllm")
    tasks = resolve_tasks(spec.tasks)
    t0 = time.perf_counter()
    resident = VllmEvaluator(base_dir, spec, tasks)
    start_s = time.perf_counter() - t0
    phases = _Phases(resident)
    a_phases: list[dict[str, float]] = []
    b_phases: list[dict[str, float]] = []
    a_times: dict[str, list[float]] = {label: [] for label, _ in cells}
    b_times: dict[str, list[float]] = {label: [] for label, _ in cells}
    a_scores: dict[str, list[dict[str, float]]] = {label: [] for label, _ in cells}
    b_scores: dict[str, list[dict[str, float]]] = {label: [] for label, _ in cells}
    scratch = Path(tempfile.mkdtemp(prefix="vllm-bench-", dir=os.environ.get("MERGE_STUDY_SCRATCH") or None))
    try:
        for _ in range(reps):
            for i, (label, state) in enumerate(cells):
                t0 = time.perf_counter()
                cell_dir = write_model_dir(base_dir, state, scratch / f"cell{i}")
                written = time.perf_counter()
                done = subprocess.run([sys.executable, __file__, "--fresh-cell", str(cell_dir), "--limit", str(limit),
                                       "--spawned", repr(time.time())], capture_output=True, text=True, cwd=REPO)
                a_times[label].append(time.perf_counter() - t0)
                if done.returncode != 0:
                    raise RuntimeError(f"fresh-engine cell {label} failed:\n{done.stderr[-3000:]}")
                child = json.loads(done.stdout.strip().splitlines()[-1])
                a_scores[label].append(child["scores"])
                a_phases.append({"write_s": written - t0, **child["phases"],
                                 "exit_s": a_times[label][-1] - (written - t0) - sum(child["phases"].values())})
                shutil.rmtree(cell_dir, ignore_errors=True)
            for label, state in cells:
                t0 = time.perf_counter()
                result = resident.evaluate(state)
                b_times[label].append(time.perf_counter() - t0)
                b_phases.append(phases.take())
                if result.backend["engine"] != "resident":
                    raise RuntimeError(f"resident engine fell back for {label}: {result.backend['engine']}")
                b_scores[label].append(_scores(result))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    hf = Evaluator(base_dir, _spec(limit, "hf"), tasks)
    hf_scores = {label: _scores(hf.evaluate(state)) for label, state in cells}

    def max_diff(x: dict[str, float], y: dict[str, float]) -> float:
        assert set(x) == set(y), (sorted(x), sorted(y))
        return max(abs(x[t] - y[t]) for t in x)

    a_med = statistics.median(t for ts in a_times.values() for t in ts)
    b_med = statistics.median(t for ts in b_times.values() for t in ts)
    n_cells = len(cells) * reps
    print(json.dumps({
        "model": model, "limit": limit, "reps": reps, "cells": [label for label, _ in cells],
        "tasks": sorted(hf_scores["base"]),
        "A_subprocess_per_cell": {label: _summary(ts) for label, ts in a_times.items()},
        "B_resident": {label: _summary(ts) for label, ts in b_times.items()},
        "mean_task_score": {label: round(statistics.mean(s.values()), 3) for label, s in hf_scores.items()},
        "A_median_s": round(a_med, 3), "B_median_s": round(b_med, 3),
        "B_engine_start_s": round(start_s, 3),
        "A_phases_median_s": _medians(a_phases), "B_phases_median_s": _medians(b_phases),
        "resident_speedup": round(a_med / b_med, 2),
        "resident_speedup_with_start_amortised": round(a_med / (b_med + start_s / n_cells), 2),
        "max_score_diff_A_vs_B": max(max_diff(a, b) for label in a_scores
                                     for a in a_scores[label] for b in b_scores[label]),
        "max_score_diff_vs_hf": max(max_diff(b, hf_scores[label]) for label in b_scores for b in b_scores[label]),
    }), flush=True)


# --- main venv ----------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


def outer(models: list[str], limit: int, reps: int, n_merges: int, quick: bool) -> None:
    if not VLLM_PYTHON.is_file():
        sys.exit(f"{VLLM_PYTHON} not found: build the vLLM venv with `bash scripts/vllm_env.sh`")
    env = {**os.environ, **OFFLINE}
    by_model = {}
    t0 = time.perf_counter()
    for model in models:
        done = subprocess.run([str(VLLM_PYTHON), __file__, "--inner", model, "--limit", str(limit), "--reps", str(reps),
                               "--merges", str(n_merges)], capture_output=True, text=True, cwd=REPO, env=env)
        if done.returncode != 0:
            sys.exit(f"{model}: measurement failed:\n{done.stderr[-4000:]}")
        by_model[model] = json.loads(done.stdout.strip().splitlines()[-1])
    last = by_model[models[-1]]
    print(json.dumps({
        "bench": "vllm_bench", "quick": quick, "cpu": _cpu_model(),
        "cores": os.cpu_count(), "wall_s": round(time.perf_counter() - t0, 1),
        "resident_speedup": last["resident_speedup"], "resident_speedup_model": models[-1],
        "max_score_diff_vs_hf": max(m["max_score_diff_vs_hf"] for m in by_model.values()),
        "by_model": by_model,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the zoo only: 3 cells, 3 repetitions, 10 docs per task")
    p.add_argument("--models", nargs="+", choices=["zoo", "smollm2"], default=["zoo", "smollm2"])
    p.add_argument("--limit", type=int, default=10, help="docs per task")
    p.add_argument("--reps", type=int, default=3, help="A/B repetitions")
    p.add_argument("--merges", type=int, default=2, choices=[1, 2, 3], help="task_arithmetic cells besides the base")
    p.add_argument("--inner", choices=["zoo", "smollm2"], help=argparse.SUPPRESS)
    p.add_argument("--fresh-cell", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fresh_cell is not None:
        fresh_cell(args.fresh_cell, args.limit, args.spawned)
    elif args.inner is not None:
        inner(args.inner, args.limit, args.reps, args.merges)
    elif args.quick:
        outer(["zoo"], args.limit, 3, 2, quick=True)
    else:
        outer(args.models, args.limit, args.reps, args.merges, quick=False)


if __name__ == "__main__":
    main()
