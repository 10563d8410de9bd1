"""Seconds of one zoo fusion cell (teachers' passes, alignment and fusion, training, evaluation), wall and CPU.

The evaluator is warmed first (a sweep builds it once per base, for the base cell), so the number is what one
more fusion cell costs in a sweep. CPU seconds of this process are printed beside wall seconds and the load
average: on a shared, loaded machine the wall time overstates what the cell costs on two idle cores.

    .venv/bin/python bench/fusion_bench.py [--method min_ce] [--steps 100] [--k 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="min_ce")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--k", type=int, default=2)
    args = ap.parse_args()
    from study.plan import BASE, FUSION
    from study.prepare import prepare
    from study.runner import CellRunner
    from study.store import Store

    experts = ["zoo:add", "zoo:first", "zoo:capital", "zoo:max"][: max(args.k, 2)]
    sweep = {"name": "fusion-bench", "seed": 0,
             "bases": [{"name": "zoo", "model": "zoo:base", "checkpoints": experts}],
             "methods": [{"name": "task_arithmetic"}],
             "fusion": [{"name": args.method, "params": {"steps": args.steps}}],
             "ks": [args.k], "subsets": {"per_k": 1},
             "evaluation": {"tasks": ["zoo:all"], "limit": 20, "batch_size": 32, "max_gen_toks": 48}}
    tmp = Path(tempfile.mkdtemp(prefix="fusion-bench-"))
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    ctx = prepare(tmp / "sweep.yaml")
    runner = CellRunner(ctx, Store(tmp / "store"))
    base, _, _ = runner.compute(next(c for c in ctx.plan.cells if c.method == BASE))  # builds the evaluator
    cell = next(c for c in ctx.plan.cells if c.kind == FUSION)
    load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.perf_counter()
    record, _, _ = runner.compute(cell)
    wall, cpu, load1 = time.perf_counter() - t0, time.process_time() - cpu0, os.getloadavg()[0]
    f = record.fusion
    print(f"{cell.describe()}: {record.status}; wall {wall:.1f} s, CPU {cpu:.1f} s, load average {load0:.1f} -> "
          f"{load1:.1f} on {os.cpu_count()} cores")
    if f is not None:
        print(f"  teachers {f.teacher_seconds:.1f} s ({f.teacher_tokens} tokens), align+fuse {f.align_fuse_seconds:.1f} s, "
              f"train {f.train_seconds:.1f} s ({f.train_steps} steps, {f.train_tokens} tokens), "
              f"evaluation {record.timing.eval_s:.1f} s")
        from study.analysis.measures import own_task

        def avg(r):
            return sum(v["score"] for v in r.scores.values()) / len(r.scores)

        own = {c: (record.scores[own_task(c)]["score"], base.scores[own_task(c)]["score"]) for c in cell.checkpoints}
        print(f"  avg score fusion {avg(record):.3f} vs base {avg(base):.3f}; teachers' own tasks (fusion, base): {own}")
    else:
        print(f"  {record.error}")


if __name__ == "__main__":
    main()
