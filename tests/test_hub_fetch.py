"""`merge-study fetch` and the hub checks of `validate`, against a local hub (``tests/fixtures/hub_server.py``)
reached by the real ``huggingface_hub`` client through ``HF_ENDPOINT``: no internet.

The repos (``default_repos``): ``acme/base``; ``acme/ft-a`` (its fine-tune, two shards); ``acme/ft-b`` (a
fine-tune of ft-a, bf16); ``other/ft-x`` (a fine-tune of another base); ``acme/ft-rows`` (32 extra embedding
rows its config does not show); ``acme/gated``; ``acme/no-card``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from study.cli import app

REPO = Path(__file__).resolve().parents[1]


def write_sweep(tmp_path: Path, checkpoints: list[str], base: str = "acme/base", **extra) -> Path:
    """A sweep of ``base`` and ``checkpoints`` scored on a one-document local task (no zoo, no lm-eval index)."""
    data = tmp_path / "docs.jsonl"
    data.write_text('{"q": "1+1=", "a": "2"}\n')
    task = tmp_path / "task_hub.yaml"
    task.write_text(yaml.safe_dump({
        "task": "hub_task", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{q}}", "doc_to_target": "{{a}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 4}, "metric_list": [{"metric": "exact_match"}]}))
    sweep = {"name": "hubtest", "bases": [{"name": "b", "model": base, "checkpoints": checkpoints}],
             "methods": [{"name": "task_arithmetic"}], "ks": [1], "evaluation": {"tasks": [str(task)], "limit": 1},
             **extra}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def lock_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "store" / "models.lock.json").read_text())


def cached_weights(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "hf-cache").glob("models--*/snapshots/*/*.safetensors"))


def full_weight_gets(hub) -> list:
    """GETs of a weight file that were not a header's range read."""
    return [r for r in hub.downloads() if r.range is None]


def test_fetch_downloads_only_what_merges_need_at_pinned_commits(online_hub, tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path, ["acme/ft-a", "acme/ft-b"])
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output
    assert "fetch: 3 model(s)" in res.output and "commits pinned in" in res.output
    fetched = {r.path.rsplit("/", 1)[-1] for r in online_hub.log if r.method == "GET" and "/resolve/" in r.path}
    assert {"model-00001-of-00002.safetensors", "model.safetensors.index.json", "config.json", "tokenizer.json",
            "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"} <= fetched
    assert not fetched & {"pytorch_model.bin", "README.md", ".gitattributes", "consolidated.safetensors"}
    lock = lock_of(tmp_path)["models"]
    repos = online_hub.repos
    assert {k: v["commit"] for k, v in lock.items()} == {r: repos[r].commits[-1][0]
                                                        for r in ("acme/base", "acme/ft-a", "acme/ft-b")}
    assert lock["acme/ft-b"]["ancestors"] == ["acme/ft-a", "acme/base"]
    served = repos["acme/ft-a"].commits[-1][1]["model-00002-of-00002.safetensors"]
    local = next(p for p in cached_weights(tmp_path) if p.name == "model-00002-of-00002.safetensors")
    assert hashlib.sha256(local.read_bytes()).digest() == hashlib.sha256(served).digest()

    from huggingface_hub import constants

    from study.prepare import prepare

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # a run never downloads: it finds what fetch put
    ctx = prepare(sweep)
    assert ctx.models["acme/ft-a"].identity == f"hub:acme/ft-a@{lock['acme/ft-a']['commit']}"


def test_a_second_fetch_resumes_after_a_failed_file_and_downloads_nothing_twice(online_hub, tmp_path):
    sweep = write_sweep(tmp_path, ["acme/ft-a", "acme/ft-b"])
    online_hub.fail["acme/ft-b/model.safetensors"] = 500
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert "acme/ft-b: downloading model.safetensors failed" in res.output
    assert "run `merge-study fetch` again" in res.output
    assert set(lock_of(tmp_path)["models"]) == {"acme/base", "acme/ft-a"}  # finished models are recorded

    del online_hub.fail["acme/ft-b/model.safetensors"]
    online_hub.log.clear()
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output
    assert [r.path.rsplit("/", 1)[-1] for r in full_weight_gets(online_hub)] == ["model.safetensors"]
    assert all("/acme/ft-b/" in r.path for r in full_weight_gets(online_hub))
    assert set(lock_of(tmp_path)["models"]) == {"acme/base", "acme/ft-a", "acme/ft-b"}

    online_hub.log.clear()
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0 and "0 B to download" in res.output
    assert full_weight_gets(online_hub) == []


def test_a_dropped_connection_resumes_with_a_range_request(online_hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 16384)  # bytes reach the file before the drop
    sweep = write_sweep(tmp_path, ["acme/ft-b"])
    online_hub.cut["acme/base/model.safetensors"] = 200_000
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output
    gets = [r for r in full_weight_gets(online_hub) + online_hub.downloads()
            if r.path.startswith("/acme/base/") and r.range != "bytes=0-100000"]
    assert gets[0].sent == 200_000 and gets[0].range is None
    resumed = [r for r in gets if r.range and r.range.startswith("bytes=") and r.range.endswith("-")]
    assert resumed and 0 < int(resumed[0].range[6:-1]) <= 200_000
    local = next(p for p in cached_weights(tmp_path) if "models--acme--base" in str(p))
    served = online_hub.repos["acme/base"].commits[-1][1]["model.safetensors"]
    assert local.read_bytes() == served


@pytest.mark.parametrize("token, status, says", [(None, 401, "no token was sent"),
                                                 ("hf_test", 403, "has not been granted access")])
def test_a_gated_repo_is_one_line_with_what_to_do(online_hub, tmp_path, monkeypatch, token, status, says):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    sweep = write_sweep(tmp_path, ["acme/gated"])
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    line = next(x for x in res.output.splitlines() if "acme/gated" in x)
    assert says in line and f"accept its conditions at {online_hub.url}/acme/gated" in line
    assert any(r.status == status for r in online_hub.log if "/acme/gated/resolve/" in r.path)
    assert "nothing was downloaded" in res.output
    assert online_hub.downloads() == [] or not full_weight_gets(online_hub)
    assert cached_weights(tmp_path) == []


@pytest.mark.parametrize("token, status", [(None, 401), ("hf_test", 404)])
def test_a_missing_id_is_named(online_hub, tmp_path, monkeypatch, token, status):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    sweep = write_sweep(tmp_path, ["acme/ft-a", "acme/no-such-model"])
    res = cli("validate", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1 and "acme/no-such-model: not found on the hub" in res.stderr
    assert [r.status for r in online_hub.log if r.path.startswith("/api/models/acme/no-such-model")] == [status]


def test_wrong_lineage_is_a_warning_naming_both_and_an_error_when_strict(online_hub, tmp_path):
    sweep = write_sweep(tmp_path, ["acme/ft-b", "other/ft-x"])
    res = cli("validate", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output
    warning = next(x for x in res.output.splitlines() if x.startswith("warning:"))
    assert "other/ft-x" in warning and "other/base-v0" in warning and "acme/base" in warning
    assert "acme/ft-b" not in res.output.split("warning:", 1)[1]  # reaches the base through acme/ft-a's card
    assert "not in the local cache yet" in res.output and "`merge-study fetch" in res.output

    strict = write_sweep(tmp_path, ["acme/ft-b", "other/ft-x", "acme/no-card"], lineage="strict")
    res = cli("fetch", str(strict), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert "error: other/ft-x: lineage" in res.output
    assert "error: acme/no-card: lineage unknown" in res.output
    assert cached_weights(tmp_path) == []


def test_a_shape_mismatch_is_found_from_headers_alone(online_hub, tmp_path):
    sweep = write_sweep(tmp_path, ["acme/ft-a", "acme/ft-rows"])
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert "checkpoint acme/ft-rows: tensor" in res.output and "(544, 64), expected (512, 64)" in res.output
    assert "vocab_mismatch: truncate" in res.output
    reads = online_hub.downloads()
    assert reads and all(r.range == "bytes=0-100000" and r.sent <= 100_001 for r in reads)  # headers only
    sizes = {len(f) for repo in online_hub.repos.values() for _, files in repo.commits for n, f in files.items()
             if n.endswith(".safetensors") and "/" not in n}
    assert min(sizes) > 100_001  # so a header read is never a whole weight file
    assert cached_weights(tmp_path) == []

    truncate = write_sweep(tmp_path, ["acme/ft-a", "acme/ft-rows"], merge={"vocab_mismatch": "truncate"})
    res = cli("validate", str(truncate), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output


def test_offline_validate_checks_the_cache_and_names_the_checks_not_done(online_hub, tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path, ["acme/ft-a", "other/ft-x"])
    assert cli("fetch", str(sweep), "--store", str(tmp_path / "store")).exit_code == 0

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    online_hub.log.clear()
    res = cli("validate", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.output
    assert online_hub.log == []
    assert "hub not reached (HF_HUB_OFFLINE is set): not checked: existence on the hub, access" in res.output
    assert "other/ft-x" in res.output and "other/base-v0" in res.output  # lineage from models.lock.json
    assert "ok (1 base(s)" in res.output

    res = cli("validate", str(sweep), "--store", str(tmp_path / "elsewhere"))  # no lock: lineage not checked
    assert "lineage of acme/ft-a, other/ft-x (not recorded in models.lock.json" in res.output
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2 and "HF_HUB_OFFLINE is set" in res.output


def test_an_unreachable_hub_falls_back_to_the_cache(online_hub, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    sweep = write_sweep(tmp_path, ["acme/ft-a"])
    res = cli("validate", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert f"hub not reached ({closed} cannot be reached)" in res.output
    assert "not in the local Hugging Face cache" in res.output and "merge-study fetch" in res.output
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2 and "cannot be reached" in res.output and "nothing was downloaded" in res.output


def test_the_free_disk_check_refuses_before_the_first_byte(online_hub, tmp_path, monkeypatch):
    import study.hub.fetch as hub_fetch

    monkeypatch.setattr(hub_fetch, "free_bytes", lambda path: 1_000_000)
    sweep = write_sweep(tmp_path, ["acme/ft-a"])
    res = cli("fetch", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2
    assert "to download but 1.0 MB free" in res.output and "nothing was downloaded" in res.output
    assert full_weight_gets(online_hub) == [] and cached_weights(tmp_path) == []


def test_a_pinned_commit_survives_a_new_main_until_update(online_hub, tmp_path):
    from fixtures.hub_server import model_files

    sweep, store = write_sweep(tmp_path, ["acme/ft-a"]), str(tmp_path / "store")
    assert cli("fetch", str(sweep), "--store", store).exit_code == 0
    pinned = lock_of(tmp_path)["models"]["acme/ft-a"]["commit"]
    moved = online_hub.repos["acme/ft-a"].push(model_files(11, base_model="acme/base", shards=2))
    online_hub.log.clear()
    res = cli("fetch", str(sweep), "--store", store)
    assert res.exit_code == 0 and full_weight_gets(online_hub) == []
    assert lock_of(tmp_path)["models"]["acme/ft-a"]["commit"] == pinned

    res = cli("fetch", str(sweep), "--store", store, "--update")
    assert res.exit_code == 0, res.output
    assert lock_of(tmp_path)["models"]["acme/ft-a"]["commit"] == moved
    assert sorted(r.path.rsplit("/", 1)[-1] for r in full_weight_gets(online_hub)) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    ref = tmp_path / "hf-cache" / "models--acme--ft-a" / "refs" / "main"
    assert ref.read_text() == moved  # what `run` resolves, offline

    online_hub.repos["acme/ft-a"].commits = online_hub.repos["acme/ft-a"].commits[:1]  # history rewritten
    res = cli("fetch", str(sweep), "--store", store)
    assert res.exit_code == 2
    assert f"commit {moved[:12]}, pinned in models.lock.json, is no longer on the hub" in res.output
    assert "`merge-study fetch --update`" in res.output


def test_a_revision_the_hub_lacks_is_named(online_hub, tmp_path):
    sweep = write_sweep(tmp_path, [{"model": "acme/ft-a", "revision": "v9"}])
    res = cli("validate", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 2 and "acme/ft-a@v9: no revision v9 on the hub" in res.output


def test_run_never_downloads_and_its_error_names_fetch(tmp_path):
    from study.errors import CheckpointError
    from study.prepare import prepare

    sweep = write_sweep(tmp_path, ["acme/ft-a"])
    with pytest.raises(CheckpointError, match=r"not in the local Hugging Face cache.*`merge-study fetch SWEEP`"):
        prepare(sweep)


def test_the_cli_reaches_the_hub_through_HF_ENDPOINT(hub_server, tmp_path):
    sweep = write_sweep(tmp_path, ["acme/ft-a"])
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
           "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "study", "fetch", str(sweep), "--store", str(tmp_path / "store")],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(cached_weights(tmp_path)) == 3 and lock_of(tmp_path)["endpoint"] == hub_server.url


def test_ancestors_are_followed_breadth_first_through_cycles():
    from study.hub.lineage import ancestors, lineage_problem

    cards = {"a": ["b"], "b": ["c", "d"], "c": ["a"], "d": []}
    assert ancestors(["a"], cards.get) == ["a", "b", "c", "d"]
    assert ancestors(["B"], lambda repo: cards.get(repo.lower())) == ["B", "c", "d", "a"]  # the hub ignores case
    assert lineage_problem("x", ["a", "B"], "b") is None
    assert "leads to a -> c, not to the sweep's base b" in lineage_problem("x", ["a", "c"], "b")
