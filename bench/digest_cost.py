"""What content identities cost: the first ``content_digest`` of a model directory (every weight file read and
hashed once) against a later one (answered from the digest cache by file stat).

    python bench/digest_cost.py [--zoo DIR] [--mb 260]

Makes a SmolLM2-135M-sized model directory (one ~260 MB safetensors file and a config.json) under /tmp, and
digests it and, when given or built, every model of the mini zoo, each with a fresh digest cache. The file was
just written, so it is in the page cache: the first-time number is hashing throughput, not disk speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from study.identity import content_digest


def _timed(path: Path, cache: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    first = content_digest(path, cache)
    t1 = time.perf_counter()
    assert content_digest(path, cache) == first
    return t1 - t0, time.perf_counter() - t1


def _smollm_sized(root: Path, mb: int) -> Path:
    from safetensors.numpy import save_file

    d = root / "smollm2-sized"
    d.mkdir()
    rng = np.random.default_rng(0)
    save_file({"weight": rng.standard_normal(mb * 2**20 // 4, dtype=np.float32)}, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", type=Path, default=None, help="a zoo directory, or a zoo root (default: $MERGE_STUDY_ZOO or the cache)")
    ap.add_argument("--mb", type=int, default=260)
    args = ap.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"CPU: {model} ({platform.machine()})")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        d = _smollm_sized(root, args.mb)
        size = sum(f.stat().st_size for f in d.iterdir()) / 2**20
        first, again = _timed(d, root / "cache-smollm")
        print(f"{size:.0f} MB model dir: first digest {first:.2f} s ({size / first:.0f} MB/s), cached {again * 1e3:.1f} ms")
        try:
            from study.zoo import load_zoo
            from study.zoo.catalog import MANIFEST, read_zoo

            zoo = read_zoo(args.zoo) if args.zoo and (args.zoo / MANIFEST).is_file() else load_zoo(args.zoo)
        except Exception as exc:
            print(f"zoo: not measured ({exc})")
            return
        cache = root / "cache-zoo"
        total_first = total_again = 0.0
        for name in zoo.models:
            first, again = _timed(zoo.model(name), cache)
            total_first, total_again = total_first + first, total_again + again
        size = sum(f.stat().st_size for f in zoo.path.rglob("*.safetensors")) / 2**20
        print(f"zoo ({len(zoo.models)} models, {size:.1f} MB of weights): first digests {total_first:.3f} s, "
              f"cached {total_again * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
