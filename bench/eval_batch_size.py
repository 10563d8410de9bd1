"""Evaluation time against lm-eval batch size, HF backend, one model: is batch size a lever on this machine?

Builds one ``Evaluator`` per batch size (the sweep's in-memory path), scores the model once to warm up, then
times two more scorings, on the mini zoo's nine tasks. No thresholds are asserted; one line per batch size,
then one JSON line.

    python bench/eval_batch_size.py                         # the mini zoo's base, 40 docs per task
    python bench/eval_batch_size.py --model DIR --limit 10  # any local HF model directory
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="HF model directory [default: the mini zoo's base]")
    ap.add_argument("--limit", type=int, default=40, help="docs per task")
    ap.add_argument("--batch-sizes", default="8,16,32,64", help="comma list (the sweep default is 16)")
    args = ap.parse_args()

    from study.config import EvaluationSpec
    from study.evaluate import Evaluator, resolve_tasks
    from study.zoo import build_zoo

    model = args.model or build_zoo(progress=False).model("base")
    best: dict[str, float] = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        spec = EvaluationSpec(tasks=["zoo:all"], limit=args.limit, batch_size=bs, max_gen_toks=64)
        evaluator = Evaluator(model, spec, resolve_tasks(spec.tasks, None))
        evaluator.evaluate()  # warm-up: first-call costs are not the batch size's
        walls = []
        for _ in range(2):
            t0 = time.perf_counter()
            evaluator.evaluate()
            walls.append(time.perf_counter() - t0)
        best[str(bs)] = round(min(walls), 3)
        print(f"batch_size {bs:3d}: " + " ".join(f"{w:.2f} s" for w in walls), flush=True)
    print(json.dumps({"bench": "eval_batch_size", "model": str(model), "limit": args.limit, "best_s": best}))


if __name__ == "__main__":
    main()
