"""Sweep throughput: `merge-study run` vs the naive per-cell pipeline, on the same cells of the mini zoo.

The naive pipeline is what a researcher writes today: for every cell, ``mergekit-yaml`` to a directory, then
``lm-eval run --model hf`` on it (base and single cells skip the merge). Both run the same cells (the
task_arithmetic cells of a small sweep, whose mergekit merge equals ours exactly, plus base and singles)
with the same tasks, limit, batch size and generation length; the script checks that every cell's scores
agree, then prints cells/hour for each and the ratio as one JSON line. No thresholds are asserted here.

Ours pays a fixed start (imports, base model, tasks) once and ~1 s per cell; naive pays ~27 s per cell, so
the ratio grows with the number of cells: always quote it with the cell count. ``merge-study run`` runs
``--ours-reps`` times (each into an empty store), interleaved with the naive cells (split evenly between
the runs), so a change in machine load reaches both; the ratio is the naive total over ours' median, and the
JSON gives ours' min and max too.

    python bench/sweep_bench.py --quick                  # 2 checkpoints, k = 1, 2: 5 cells (under 3 minutes on 2 cores)
    python bench/sweep_bench.py                          # 4 checkpoints, k = 1, 2, 3: 13 cells
    python bench/sweep_bench.py --checkpoints 8 --per-k 4    # 8 checkpoints, k = 1, 2, 3, 4 subsets per k: 25 cells
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

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHECKPOINTS = ("add", "capital", "first", "colour", "count", "last", "max", "next", "sub")


def sweep_dict(checkpoints: list[str], ks: list[int], limit: int, per_k: int = 2) -> dict:
    return {
        "name": "sweep-bench", "seed": 0,
        "bases": [{"name": "zoo", "model": "zoo:base", "checkpoints": [f"zoo:{c}" for c in checkpoints]}],
        "methods": [{"name": "task_arithmetic", "params": {"lambda": ["1/k", 1.0]}}],
        "ks": ks, "subsets": {"per_k": per_k},
        "evaluation": {"tasks": ["zoo:all"], "limit": limit, "batch_size": 32, "max_gen_toks": 32},
    }


def run_ours(sweep_path: Path, store: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "merge-study"), "run", str(sweep_path), "--store", str(store)], check=True,
                   capture_output=True, text=True)
    return time.perf_counter() - t0


def mergekit_config(base: Path, models: list[Path], lam: float) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
            "parameters": {"lambda": lam, "normalize": False},
            "models": [{"model": str(m), "parameters": {"weight": 1.0}} for m in models]}


def naive_cell(cell: dict, zoo, tasks_dir: Path, spec: dict, work: Path) -> dict[str, float]:
    """One cell the naive way: mergekit-yaml to disk (merges only), then the lm-eval CLI on the directory."""
    if cell["method"] == "base":
        model_dir = zoo.model("base")
    elif cell["method"] == "single":
        model_dir = zoo.model(cell["checkpoints"][0].removeprefix("zoo:"))
    else:
        cfg = work / "merge.yaml"
        cfg.write_text(yaml.safe_dump(mergekit_config(zoo.model("base"), [zoo.model(c.removeprefix("zoo:"))
                                                                         for c in cell["checkpoints"]],
                                                      cell["resolved_params"]["lambda"])))
        model_dir = work / "merged"
        shutil.rmtree(model_dir, ignore_errors=True)
        subprocess.run([str(BIN / "mergekit-yaml"), str(cfg), str(model_dir), "--copy-tokenizer"], check=True,
                       capture_output=True, text=True)
    out = work / "lm_eval_out"
    shutil.rmtree(out, ignore_errors=True)
    ev = spec["evaluation"]
    subprocess.run([str(BIN / "lm-eval"), "run", "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
                    "--tasks", ",".join(zoo.tasks), "--include_path", str(tasks_dir), "--limit", str(ev["limit"]),
                    "--batch_size", str(ev["batch_size"]), "--device", "cpu", "--gen_kwargs",
                    f"max_gen_toks={ev['max_gen_toks']}", "--output_path", str(out), "--seed", "1234"],
                   check=True, capture_output=True, text=True)
    result = json.loads(next(out.rglob("results_*.json")).read_text())
    scores = {}
    for task, metrics in result["results"].items():
        key = next(k for k in metrics if k.split(",")[0] in ("acc", "exact_match") and "stderr" not in k)
        scores[task] = float(metrics[key])
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 checkpoints, k = 2: 5 cells, under 3 minutes on 2 cores")
    ap.add_argument("--limit", type=int, default=20, help="docs per task")
    ap.add_argument("--checkpoints", type=int, default=4, choices=range(2, len(CHECKPOINTS) + 1), metavar="N",
                    help=f"the first N zoo experts of {', '.join(CHECKPOINTS)} (the sweep's size grows with N and --per-k)")
    ap.add_argument("--per-k", type=int, default=2, help="subsets drawn per k >= 2 (sweep subsets.per_k)")
    ap.add_argument("--ks", default="1,2,3", help="subset sizes, comma-separated (1: the single experts)")
    ap.add_argument("--ours-reps", type=int, default=3, help="merge-study run repetitions, interleaved with the naive cells")
    args = ap.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1")

    from study.store import Store
    from study.zoo import build_zoo

    zoo = build_zoo(progress=False)
    checkpoints = list(CHECKPOINTS[:2 if args.quick else args.checkpoints])
    ks = [1, 2] if args.quick else [int(k) for k in args.ks.split(",")]
    spec = sweep_dict(checkpoints, ks, args.limit, 2 if args.quick else args.per_k)
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    try:
        sweep_path = work / "sweep.yaml"
        sweep_path.write_text(yaml.safe_dump(spec))
        store = work / "store"
        print(f"# sweep bench on {platform.node()} ({os.cpu_count()} cpus), checkpoints={checkpoints}", flush=True)
        ours_runs = [run_ours(sweep_path, store)]
        st = Store(store)
        cells = {c["cell_id"]: c for c in json.loads((store / "plan.json").read_text())["cells"]}
        n = len(cells)
        print(f"merge-study run: {n} cells in {ours_runs[0]:.1f} s", flush=True)
        mismatches = 0
        naive_s = 0.0
        order = list(cells.items())
        reps = max(1, args.ours_reps)
        for part in range(reps):
            for cid, cell in order[part * n // reps:(part + 1) * n // reps]:
                t0 = time.perf_counter()
                theirs = naive_cell(cell, zoo, zoo.path / "tasks", spec, work)
                naive_s += time.perf_counter() - t0
                ours = {t: v["score"] for t, v in st.get(cid).scores.items()}
                diff = {t: (ours.get(t), theirs.get(t)) for t in set(ours) | set(theirs) if ours.get(t) != theirs.get(t)}
                if diff:
                    mismatches += 1
                    print(f"  score mismatch in {cell['method']} {cell['checkpoints']}: {diff}", flush=True)
            if part + 1 < reps:
                again = work / f"store{part + 1}"
                ours_runs.append(run_ours(sweep_path, again))
                print(f"merge-study run again: {ours_runs[-1]:.1f} s", flush=True)
                shutil.rmtree(again, ignore_errors=True)
        ours_s = statistics.median(ours_runs)
        print(f"naive mergekit-yaml + lm-eval CLI: {n} cells in {naive_s:.1f} s", flush=True)
        result = {"bench": "sweep", "cells": n, "checkpoints": len(checkpoints), "ks": ks,
                  "ours_s": {"median": round(ours_s, 1), "min": round(min(ours_runs), 1), "max": round(max(ours_runs), 1),
                             "runs": len(ours_runs)},
                  "naive_s": round(naive_s, 1), "ours_cells_per_hour": round(3600 * n / ours_s, 1),
                  "naive_cells_per_hour": round(3600 * n / naive_s, 1),
                  "speedup_vs_naive": round(naive_s / ours_s, 2), "score_mismatches": mismatches,
                  "load_at_end": os.getloadavg()[0]}
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
