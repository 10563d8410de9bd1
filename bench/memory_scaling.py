"""Peak memory of the streaming driver against k: native ``task_arithmetic`` and ``tsv_merge`` merging 2, 4, 8
SmolLM2-135M variants (bf16, 30 layers; see tests/smollm2.py, which builds and caches them).

Each measurement runs in a fresh subprocess (``--one METHOD K``) that streams the merge with ``iter_merge`` and
drops every merged tensor, then reports its peak RSS (``VmHWM``; see bench/peak_memory.py): the driver's own peak,
torch and transformers imports included, the merged model not held. The baseline row (k = 0) is the
process after the same imports. Usage: ``python bench/memory_scaling.py [--ks 2 4 8]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
METHODS = ("task_arithmetic", "tsv_merge")


def one(method: str, k: int) -> None:
    import smollm2
    import torch  # noqa: F401  (imported in every row, so the baseline is comparable)

    from study.merge import iter_merge, open_inputs
    from study.methods.registry import get_method

    start = time.perf_counter()
    if k > 0:
        base, fulls, _ = smollm2.variants(k)
        info = get_method(method)
        inputs = open_inputs(base, fulls[:k])
        for _name, _tensor in iter_merge(inputs, info, info.resolve_params({}, k)):
            pass
    from peak_memory import peak_rss_mib

    peak_mib = peak_rss_mib()
    print(f"{peak_mib:.0f} {time.perf_counter() - start:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "K"))
    args = parser.parse_args()
    if args.one:
        one(args.one[0], int(args.one[1]))
        return
    import smollm2

    smollm2.variants(max(args.ks))
    rows = [("(imports only)", 0)] + [(m, k) for m in METHODS for k in args.ks]
    print(f"{'method':<16} {'k':>2} {'peak RSS MiB':>13} {'merge s':>8}")
    for method, k in rows:
        out = subprocess.run(
            [sys.executable, __file__, "--one", method if k else "task_arithmetic", str(k)],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        print(f"{method:<16} {k:>2} {out[-2]:>13} {out[-1]:>8}")


if __name__ == "__main__":
    main()
