"""What the interference diagnostics add to a merge: task arithmetic with and without them, interleaved.

A = ``merge_state_dict`` of task arithmetic (λ = 1), what a sweep cell runs; B = the same with a
``study.diagnostics.DiagnosticsAccumulator`` fed by the driver's ``observe`` hook, its ``result()`` included.
Runs alternate A, B, A, B... in one process after one warm-up of each (page cache, imports, allocator), so
both see the same machine state; the overhead is the median over pairs of B / A − 1 (wall, and process CPU
time); less exposed to other load, the fastest B over the fastest A (as ``merge_bench.py`` keeps the least
disturbed run), and the median of the seconds spent inside the accumulator over A's. The target (issue 19)
is at most 10%.

Families: the mini zoo (experts ``add, sub, capital, count, ...`` in zoo order; one torch thread, as a sweep
runs models under 50 M parameters) and, when ``tests/smollm2.py`` can provide them (cached under
``$MERGE_STUDY_CACHE``, else built: a download and about a minute per variant), SmolLM2-135M and its LoRA
fine-tuned variants (bf16; torch's default threads). Prints a table, then one JSON line.

    python bench/diagnostics_bench.py                       # zoo and SmolLM2, k = 2 and 4, 9 pairs each
    python bench/diagnostics_bench.py --families zoo --pairs 5
    python bench/diagnostics_bench.py --threads 1            # one thread everywhere (steadier on a shared CPU)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def zoo_family(n: int) -> tuple[Path, list[Path]]:
    from study.zoo import build_zoo

    zoo = build_zoo(progress=False)
    return zoo.model("base"), [zoo.model(e) for e in zoo.experts[:n]]


def smollm2_family(n: int) -> tuple[Path, list[Path]]:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import smollm2

    base, fulls, _ = smollm2.variants(n)
    return base, fulls


class Timed:
    """The accumulator, with the wall and CPU seconds spent inside it (its own share of B)."""

    def __init__(self, k: int):
        from study.diagnostics import DiagnosticsAccumulator

        self.acc, self.wall, self.cpu = DiagnosticsAccumulator(k), 0.0, 0.0

    def _timed(self, fn, *args):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.wall += time.perf_counter() - w
        self.cpu += time.process_time() - c
        return out

    def __call__(self, *args) -> None:
        self._timed(self.acc.add, *args)

    def result(self):
        return self._timed(self.acc.result)


def merge_once(base: Path, models: list[Path], diagnostics: bool) -> dict:
    """One in-memory task-arithmetic merge: wall and CPU seconds, and with diagnostics their own share."""
    from study.merge import merge_state_dict, open_inputs
    from study.methods.registry import get_method

    info = get_method("task_arithmetic")
    params = info.resolve_params({"lambda": 1.0}, n_models=len(models))
    timed = Timed(len(models)) if diagnostics else None
    w, c = time.perf_counter(), time.process_time()
    merged = merge_state_dict(open_inputs(base, models), info, params, observe=timed)
    result = timed.result() if timed is not None else None
    out = {"wall": time.perf_counter() - w, "cpu": time.process_time() - c}
    del merged
    if timed is not None:
        out |= {"diag_wall": timed.wall, "diag_cpu": timed.cpu, "scalars": result.scalars() | {"sampled": result.sampled}}
    return out


def measure(base: Path, models: list[Path], pairs: int) -> dict:
    """Median over A/B pairs of B / A (wall and CPU), and of the diagnostics' own time over A's."""
    merge_once(base, models, False)
    scalars = merge_once(base, models, True)["scalars"]
    a, b = [], []
    for _ in range(pairs):
        a.append(merge_once(base, models, False))
        b.append(merge_once(base, models, True))

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 4)

    wall = [y["wall"] / x["wall"] for x, y in zip(a, b)]
    return {"A_median_s": med([x["wall"] for x in a]), "B_median_s": med([y["wall"] for y in b]),
            "A_fastest_s": round(min(x["wall"] for x in a), 4), "B_fastest_s": round(min(y["wall"] for y in b), 4),
            "median_ratio": med(wall), "min_ratio": round(min(wall), 4), "max_ratio": round(max(wall), 4),
            "fastest_ratio": round(min(y["wall"] for y in b) / min(x["wall"] for x in a), 4),
            "cpu_median_ratio": med([y["cpu"] / x["cpu"] for x, y in zip(a, b)]),
            "own_share_wall": med([y["diag_wall"] / x["wall"] for x, y in zip(a, b)]),
            "own_share_cpu": med([y["diag_cpu"] / x["cpu"] for x, y in zip(a, b)]),
            "pairs": pairs, "diagnostics": scalars}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["zoo", "smollm2"], choices=["zoo", "smollm2"])
    ap.add_argument("--ks", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--pairs", type=int, default=9, help="A/B pairs per (family, k) after the warm-up")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every family (default: 1 on the zoo, torch's default on SmolLM2)")
    args = ap.parse_args()
    import torch

    default_threads = torch.get_num_threads()
    rows = []
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").is_file() else []
    for family in args.families:
        try:
            base, pool = zoo_family(max(args.ks)) if family == "zoo" else smollm2_family(max(args.ks))
        except Exception as exc:  # SmolLM2 needs PyPI once: say why it is missing and go on
            print(f"{family}: skipped ({type(exc).__name__}: {exc})")
            continue
        torch.set_num_threads(args.threads or (1 if family == "zoo" else default_threads))
        for k in args.ks:
            row = {"family": family, "k": k, "threads": torch.get_num_threads(), **measure(base, pool[:k], args.pairs)}
            rows.append(row)
            print(f"{family:8s} k={k}  A {row['A_median_s']:.4f} s  B {row['B_median_s']:.4f} s  "
                  f"B/A median {row['median_ratio']:.3f} (min {row['min_ratio']:.3f}, max {row['max_ratio']:.3f}), "
                  f"fastest B / fastest A {row['fastest_ratio']:.3f}; "
                  f"CPU B/A {row['cpu_median_ratio']:.3f}; own time / A: wall {row['own_share_wall']:.3f}, "
                  f"CPU {row['own_share_cpu']:.3f}", flush=True)
    print(json.dumps({"bench": "diagnostics_bench", "cpu": cpu_model(), "cores": len(__import__("os").sched_getaffinity(0)),
                      "loadavg_start": load, "rows": rows}))


if __name__ == "__main__":
    main()
