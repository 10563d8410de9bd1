"""Downloading a sweep's hub models into the local Hugging Face cache, once the checks passed.

Every file comes through ``huggingface_hub.hf_hub_download`` at the commit the checks probed (so all files of a
model are of one commit even if ``main`` moves meanwhile), into the standard cache that ``run`` reads: the cache's
lock files, its Xet path for large files, and its resume of a dropped connection with a ``Range`` request are
huggingface_hub's. What is added here: only the files merges and evaluation need (``RemoteModel.files``), the
total size and a free-disk check before the first byte, one progress bar over all bytes, and a resumable whole:
a file already in the cache is never fetched again, a model's ``refs/<revision>`` is written only once all its
files are in (so a half-fetched model is not what ``run`` finds), and the lock file gains the model then.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from study.config import ModelRef
from study.errors import UserError
from study.hub.checks import HubReport, cached_commit
from study.hub.client import endpoint
from study.hub.lock import LockedModel, ModelsLock, write_lock
from study.hub.remote import RemoteModel

HEADROOM = 1 << 30
"""Bytes left free after a fetch: the store, lm-eval's caches and the run's temporary files need room too."""


class ModelTask(BaseModel):
    """One model to bring into the cache: the files it still lacks, and whether its ref must be written."""

    model: RemoteModel
    missing: list[str]
    ref_ok: bool

    @property
    def missing_bytes(self) -> int:
        return sum(self.model.files[f] for f in self.missing)


class FetchPlan(BaseModel):
    cache: str
    tasks: list[ModelTask]

    @property
    def download_bytes(self) -> int:
        return sum(t.missing_bytes for t in self.tasks)

    @property
    def total_bytes(self) -> int:
        return sum(t.model.size for t in self.tasks)

    @property
    def pending(self) -> list[ModelTask]:
        return [t for t in self.tasks if t.missing or not t.ref_ok]


def size_text(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plan_fetch(report: HubReport) -> FetchPlan:
    """What of each checked model the local cache lacks (no request is made: the cache is read)."""
    from huggingface_hub import constants, try_to_load_from_cache

    tasks = []
    for model in report.models.values():
        missing = [f for f in model.files
                   if not isinstance(try_to_load_from_cache(model.repo, f, revision=model.commit), str)]
        ref = ModelRef(model=model.repo, revision=model.revision)
        tasks.append(ModelTask(model=model, missing=missing, ref_ok=cached_commit(ref) == model.commit))
    return FetchPlan(cache=str(constants.HF_HUB_CACHE), tasks=tasks)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds (or will hold) ``path``."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_disk(plan: FetchPlan) -> None:
    """Refuse, before the first byte, a fetch the cache's disk cannot hold (with ``HEADROOM`` left)."""
    need, free = plan.download_bytes, free_bytes(Path(plan.cache))
    if need and need + HEADROOM > free:
        raise UserError(f"{plan.cache}: {size_text(need)} to download but {size_text(free)} free (a fetch leaves "
                        f"{size_text(HEADROOM)} free): free space, or set HF_HUB_CACHE to a larger disk; nothing "
                        f"was downloaded")


def download(plan: FetchPlan, report: HubReport, lock: ModelsLock, lock_file: Path,
             echo: Callable[[str], None]) -> ModelsLock:
    """Fetch what ``plan`` lacks, model by model; after each, write its ref and its lock entry."""
    from tqdm import tqdm

    bar = tqdm(total=plan.download_bytes, unit="B", unit_scale=True, desc="fetch", disable=None)
    try:
        for task in plan.tasks:
            model = task.model
            for name in task.missing:
                _download_file(model, name, _forward_to(bar))
            _write_ref(model.repo, model.revision, model.commit)
            lock.models[model.label] = LockedModel(model=model.repo, revision=model.revision, commit=model.commit,
                                                   files=model.files, ancestors=report.ancestors.get(model.label, []))
            write_lock(lock_file, lock)
            done = (f"{len(task.missing)} file(s), {size_text(task.missing_bytes)}" if task.missing
                    else "already in the cache")
            echo(f"  {model.label} @ {model.commit[:12]}: {done}")
    finally:
        bar.close()
    return lock


def _download_file(model: RemoteModel, name: str, tqdm_class: Any) -> None:
    import httpx2
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model.repo, name, revision=model.commit, endpoint=endpoint(), tqdm_class=tqdm_class)
    except (OSError, httpx2.HTTPError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{model.label}: downloading {name} failed ({type(exc).__name__}: {first}): run "
                        f"`merge-study fetch` again (files already downloaded are kept)") from None


def _write_ref(repo: str, revision: str, commit: str) -> None:
    """Point the cache's ``refs/<revision>`` at ``commit``, as huggingface_hub does after a download by branch
    name: ``run`` resolves a sweep's revision through it, offline."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name
    from study.store import atomic_write

    if revision == commit:
        return
    path = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model") / "refs" / revision
    if not (path.is_file() and path.read_text() == commit):
        atomic_write(path, commit.encode())


def _forward_to(bar: Any) -> type:
    """A ``tqdm_class`` for ``hf_hub_download`` that adds each file's bytes to ``bar`` (one bar for the fetch,
    not one per file), as ``snapshot_download``'s own aggregating class does."""

    class Forward:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def __enter__(self) -> "Forward":
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

        def close(self) -> None:
            pass

        def update(self, n: float | None = 1) -> None:
            bar.update(n or 0)

        def update_transfer(self, n: float | None = 1) -> None:
            pass

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

    return Forward
