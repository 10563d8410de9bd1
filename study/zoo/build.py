"""Building the mini zoo: train the base on the skill mixture, fine-tune one expert per skill, write tasks.

A build is cached by content: it goes into a hidden sibling directory, writes ``manifest.json`` last, then
renames itself to ``zoo-<arch>-<hash>``. A killed build leaves only a hidden directory, which the next build
removes; a directory with a manifest is complete and is returned at once. A lock file serialises builds of
the same zoo, so two processes (a test session and a CLI) never train it twice at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from study.zoo.catalog import MANIFEST, Zoo, read_zoo, zoo_path, zoo_summary
from study.zoo.skills import digest, drawer, mixture
from study.zoo.spec import (
    BASE_MIXTURE,
    BASE_SCHEDULE,
    BASE_STEPS_SHARE,
    EXPERT_SCHEDULE,
    EXPERTS,
    SEED,
    SHAPE,
    ZOO_VERSION,
    own_task,
    spec,
    spec_hash,
)
from study.zoo.tasks import TASKS, write_tasks


def build_zoo(root: Path | None = None, *, arch: str = "llama", progress: bool = True) -> Zoo:
    """The zoo of ``arch`` under ``root`` (default root if None), trained first if it is not complete."""
    path = zoo_path(root, arch)
    if not (path / MANIFEST).is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with _lock(path.parent / f".{path.name}.lock"):
            if not (path / MANIFEST).is_file():
                _build(path, arch, progress)
    zoo = read_zoo(path)
    if progress:
        print(zoo_summary(zoo), flush=True)
    return zoo


@contextlib.contextmanager
def _lock(lock_file: Path) -> Iterator[None]:
    with open(lock_file, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(path: Path, arch: str, progress: bool) -> None:
    """Train into ``.<name>.tmp-<pid>`` beside ``path``, then rename it to ``path``. Holds the lock."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if path.exists():
        shutil.rmtree(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        manifest = _train_all(tmp, path, arch, progress)
        staged = tmp / f"{MANIFEST}.tmp"
        staged.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staged, tmp / MANIFEST)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _train_all(out: Path, final: Path, arch: str, progress: bool) -> dict[str, Any]:
    import copy

    from study.zoo.model import init_model, save_model
    from study.zoo.tokenizer import build_tokenizer
    from study.zoo.train import train

    start, cpu_start = time.perf_counter(), time.process_time()
    _say(progress, f"building the mini zoo ({arch}) at {final}")
    tokenizer = build_tokenizer()
    base = init_model(SHAPE, arch, tokenizer, seed=digest(SEED, arch, "init") % 2**31)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    losses: dict[str, float] = {}

    def fit(name: str, model: Any, draw: Any, schedule: Any) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        seed = digest(SEED, arch, name) % 2**31
        curve = train(model, tokenizer, draw, schedule, seed=seed, desc=name, progress=progress)
        timings[name] = round(time.perf_counter() - t0, 1)
        cpu[name] = round(time.process_time() - c0, 1)
        losses[name] = round(sum(curve[-20:]) / len(curve[-20:]), 4)
        save_model(model, tokenizer, out / "models" / name)
        steps = f"{schedule.steps} steps in {timings[name]:.0f} s"
        _say(progress, f"  {name}: {steps} ({cpu[name]:.0f} s CPU), final loss {losses[name]:.3f}")

    fit("base", base, mixture(BASE_MIXTURE, BASE_STEPS_SHARE), BASE_SCHEDULE)
    for name, (skill, fmt) in EXPERTS.items():
        fit(name, copy.deepcopy(base), drawer(skill, fmt), EXPERT_SCHEDULE)
    write_tasks(out, final)
    return {
        "zoo_version": ZOO_VERSION,
        "arch": arch,
        "spec_hash": spec_hash(arch),
        "parameters": sum(p.numel() for p in base.parameters()),
        "models": ["base", *EXPERTS],
        "tasks": list(TASKS),
        "skills": {name: own_task(name) for name in EXPERTS},
        "formats": {name: fmt for name, (_, fmt) in EXPERTS.items()},
        "train_seconds": timings,
        "train_cpu_seconds": cpu,
        "final_loss": losses,
        "build_seconds": round(time.perf_counter() - start, 1),
        "build_cpu_seconds": round(time.process_time() - cpu_start, 1),
        "spec": spec(arch),
    }
