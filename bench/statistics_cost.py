"""Cost of the statistics pass (``study.statistics``): seconds, peak RSS and file size per checkpoint.

Each (model, statistic) is computed in a fresh subprocess, so its peak RSS (``ru_maxrss``) is that computation's
alone (with the imports): model load, calibration text, the statistic. Seconds exclude the imports and include
the identity digests, the model load, the run and the write. The mini zoo's experts and, when ``tests/smollm2.py`` finds
its cached variants (``$MERGE_STUDY_CACHE``), SmolLM2-135M full checkpoints and a LoRA adapter. Usage:
``.venv/bin/python bench/statistics_cost.py [--smollm2] [--sequences 64]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATISTICS = ("act_abs_mean", "gram", "fisher_diag")

CHILD = """
import json, resource, sys, time
from pathlib import Path
from study.sources import open_source
from study.statistics.cache import ensure, COMPUTED
from study.statistics.spec import CalibrationSpec, StatisticRequest
from transformers import AutoModelForCausalLM, AutoTokenizer  # imports are not the statistic's cost
import torch
base, model, statistic, sequences, root = sys.argv[1:6]
req = StatisticRequest(statistic=statistic, calibration=CalibrationSpec(sequences=int(sequences)))
t0 = time.perf_counter()
path = ensure(req, open_source(Path(model), open_source(Path(base))), Path(base), Path(root))
print(json.dumps({"seconds": time.perf_counter() - t0, "computed": len(COMPUTED),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "file_mb": path.stat().st_size / 2**20}))
"""


def measure(base: Path, model: Path, statistic: str, sequences: int, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(base), str(model), statistic, str(sequences), str(root)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--sequences", type=int, default=64)
    args = ap.parse_args()
    from study.zoo import load_zoo

    zoo = load_zoo()
    cases = [("zoo", zoo.model("base"), zoo.model(e)) for e in ("add", "capital")]
    if args.smollm2:
        sys.path.insert(0, str(REPO / "tests"))
        import smollm2

        base, full, adapters = smollm2.variants(2)
        cases += [("SmolLM2-135M", base, full[0]), ("SmolLM2-135M LoRA", base, adapters[0])]
    print("| model | checkpoint | statistic | seconds | peak RSS MB | file MB |")
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, base, model in cases:
            for statistic in STATISTICS:
                r = measure(base, model, statistic, args.sequences, Path(tmp))
                assert r["computed"] == 1
                print(f"| {label} | {model.name} | {statistic} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | "
                      f"{r['file_mb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
