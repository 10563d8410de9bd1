"""Content identities of model directories: what a checkpoint is, independent of where it lies and when it was touched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from study.identity import content_digest, file_digest


def _model(d: Path, weights: bytes = b"\x00" * 100) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"a": 1}')
    (d / "model.safetensors").write_bytes(weights)
    (d / "tokenizer.json").write_text("{}")
    return d


def test_touch_copy_move_keep_the_digest_and_a_changed_byte_changes_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = _model(tmp_path / "a")
    d = content_digest(a, cache)
    assert d.startswith("sha256:")
    os.utime(a / "model.safetensors", ns=(1, 1))
    assert content_digest(a, cache) == d
    shutil.copytree(a, tmp_path / "b")
    assert content_digest(tmp_path / "b", cache) == d
    (tmp_path / "a").rename(tmp_path / "c")
    assert content_digest(tmp_path / "c", cache) == d
    (tmp_path / "c" / "tokenizer.json").write_text('{"x": 2}')
    assert content_digest(tmp_path / "c", cache) == d, "a tokenizer file is not part of the weights' identity"
    data = bytearray((tmp_path / "c" / "model.safetensors").read_bytes())
    data[50] = 1
    (tmp_path / "c" / "model.safetensors").write_bytes(bytes(data))
    assert content_digest(tmp_path / "c", cache) != d


def test_a_file_is_read_once_until_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import study.identity as identity

    cache = tmp_path / "cache"
    a = _model(tmp_path / "a")
    reads: list[Path] = []
    real = identity._sha256
    monkeypatch.setattr(identity, "_sha256", lambda f: reads.append(f) or real(f))
    content_digest(a, cache)
    assert len(reads) == 2
    content_digest(a, cache)
    assert len(reads) == 2, "the second digest comes from the cache"
    (a / "config.json").write_text('{"a": 2}')
    content_digest(a, cache)
    assert len(reads) == 3
    assert all(json.loads(p.read_text())["sha256"] for p in cache.glob("*.json"))


def test_a_hub_cache_file_is_named_by_its_blob_and_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import study.identity as identity

    blobs = tmp_path / "models--x--y" / "blobs"
    snap = tmp_path / "models--x--y" / "snapshots" / "abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    sha = hashlib.sha256(b"weights").hexdigest()
    (blobs / sha).write_bytes(b"weights")
    (snap / "model.safetensors").symlink_to(blobs / sha)
    monkeypatch.setattr(identity, "_sha256", lambda f: pytest.fail(f"read {f}"))
    assert file_digest(snap / "model.safetensors", tmp_path / "cache") == f"blob:{sha}"


def test_concurrent_digests_agree(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a = _model(tmp_path / "a", os.urandom(3 * 1024 * 1024))
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(content_digest(a, cache))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert not list(cache.glob(".tmp-*"))
