"""What a model directory *is*: a digest of its weights and configs, not of where it lies or when it was touched.

Cell keys carry this digest, so touching, copying or moving a checkpoint keeps its cells done, while one changed
byte recomputes them. Reading gigabytes on every ``run`` would be slow, so each file's sha256 is cached by
(path, size, mtime_ns, inode): a file is read once until it changes. Files inside the Hugging Face cache are
never read: a snapshot's files are symlinks into ``blobs/``, whose names are already the sha256 (LFS weights)
or the git etag (small files) of their content.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

IDENTITY_FILES = ("config.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
CHUNK = 8 * 1024 * 1024


def digest_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/merge-study/digests``, else ``~/.cache/merge-study/digests``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base).expanduser() if base else Path.home() / ".cache"
    return root / "merge-study" / "digests"


def identity_files(path: Path) -> list[Path]:
    """The files that define a model: weights and configs (tokenizers and READMEs do not change its outputs)."""
    return sorted(
        f for f in path.rglob("*")
        if f.is_file() and not f.name.startswith(".")
        and (f.name in IDENTITY_FILES or f.name.endswith(WEIGHT_SUFFIXES))
    )


def _hub_blob(file: Path) -> str | None:
    """The blob name of a Hugging Face cache snapshot file (a symlink into ``blobs/``), else None."""
    if not file.is_symlink():
        return None
    target = file.resolve()
    if target.parent.name == "blobs" and len(target.name) >= 40:
        return target.name
    return None


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(file, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _write_atomic(target: Path, text: str) -> None:
    """Concurrent writers each rename a complete file into place; the last one wins, nobody reads half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(file: Path, cache_dir: Path | None = None) -> str:
    """A file's content digest (``blob:<name>`` for a hub-cache file, else its sha256), cached by its stat."""
    blob = _hub_blob(file)
    if blob is not None:
        return f"blob:{blob}"
    real = file.resolve()
    st = real.stat()
    key = {"path": str(real), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    entry = (cache_dir or digest_cache_dir()) / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40] + ".json")
    try:
        cached = json.loads(entry.read_text())
        if cached.get("key") == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    value = _sha256(real)
    try:
        _write_atomic(entry, json.dumps({"key": key, "sha256": value}))
    except OSError:
        pass
    return value


def content_digest(path: Path, cache_dir: Path | None = None) -> str:
    """``sha256:<hex>`` over a model directory's weight and config files: names relative to it and their digests."""
    path = Path(path)
    entries = [[f.relative_to(path).as_posix(), file_digest(f, cache_dir)] for f in identity_files(path)]
    return "sha256:" + hashlib.sha256(json.dumps(entries).encode()).hexdigest()
