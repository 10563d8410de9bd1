"""lm-eval's own result files per cell, `export-results`, `export` (bit-identical weights and a model card,
push), and `evaluation.allow_code_execution`.

One small sweep on the mini zoo runs once for the module (base, three singles and one merge per method) and
every test reads its store. The files are checked with lm-eval's own filename helpers, its result schema
(``lm_eval.result_schema``) and the ``datasets`` JSON loader its tracker writes them for; the slow tier also
compares them with the files lm-eval's CLI writes for a zoo task.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fixtures.sweeps import cli


def invoke(*args: str, check: bool = True):
    """The CLI in this process (imports paid once for the module); ``check``: exit status 0 required."""
    from typer.testing import CliRunner

    from study.cli import app

    result = CliRunner().invoke(app, list(args))
    if check and result.exit_code != 0:
        raise AssertionError(f"merge-study {' '.join(args)} exited {result.exit_code}:\n{result.output}")
    result.returncode = result.exit_code
    return result

METHODS = [
    {"name": "task_arithmetic", "params": {"lambda": 0.5}},
    {"name": "ties", "params": {"density": 0.5}},
    {"name": "linear"},
    {"name": "slerp", "params": {"t": 0.3}},
    {"name": "dare_linear", "params": {"density": 0.5}},
    {"name": "mergekit:task_arithmetic", "params": {"lambda": 0.5}},
]


def sweep_doc(**evaluation) -> dict:
    return {"name": "export", "bases": [{"name": "zoo", "model": "zoo:base",
                                          "checkpoints": ["zoo:add", "zoo:capital", "zoo:first"]}],
            "methods": METHODS, "ks": [1, 2], "subsets": {"per_k": 1},
            "evaluation": {"tasks": ["zoo:add", "zoo:capital"], "limit": 6, "batch_size": 16, "max_gen_toks": 8,
                           **evaluation}}


@pytest.fixture(scope="module")
def swept(built_zoo, tmp_path_factory):
    """(sweep file, store, context) of the module's sweep, run once through the CLI."""
    from study.prepare import prepare

    root = tmp_path_factory.mktemp("export")
    sweep = root / "export.yaml"
    sweep.write_text(yaml.safe_dump(sweep_doc()))
    store = root / "store"
    cli("run", str(sweep), "--store", str(store))
    return sweep, store, prepare(sweep)


def merge_cell(ctx, method: str):
    return next(c for c in ctx.plan.unique_cells() if c.method == method)


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def files_of(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- item 5: lm-eval's files beside every record ------------------------------------------------------------


def test_every_done_record_has_lm_eval_files_with_standard_errors(swept):
    from study.store import Store

    _, store, ctx = swept
    st = Store(store, create=False)
    records = [st.get(c.cell_id) for c in ctx.plan.unique_cells()]
    assert len(records) == 10 and all(r is not None and r.status == "done" for r in records)
    assert st.verify() == []
    for rec in records:
        names = sorted(rec.lm_eval_files)
        assert [n.split("_")[0] for n in names] == ["results", "samples", "samples"], names
        results = json.loads(st.lm_eval_file(rec, names[0]))
        assert results["config"]["bootstrap_iters"] == 100000 and results["merge_study"]["cell_id"] == rec.cell_id
        for task, entry in rec.scores.items():
            key = next(k for k in results["results"][task] if k.startswith(entry["metric"] + ","))
            assert results["results"][task][key] == entry["score"]
            stderr = results["results"][task][key.replace(",", "_stderr,")]
            assert isinstance(stderr, float) and stderr >= 0 and stderr == entry["stderr"]
        for name in names[1:]:
            task = name[len("samples_"):].rsplit("_", 1)[0]
            lines = st.lm_eval_file(rec, name).decode().splitlines()
            assert len(lines) == 6 and json.loads(lines[0])["doc_id"] == 0, task
            assert (store / "lm_eval" / rec.cell_id[:2] / rec.cell_id / f"{name}.gz").is_file()


def test_a_damaged_lm_eval_file_is_reported_and_refused(swept, tmp_path):
    import shutil

    from study.errors import UserError
    from study.store import Store

    _, store, ctx = swept
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    st = Store(copy, create=False)
    rec = st.get(merge_cell(ctx, "ties").cell_id)
    name = next(n for n in rec.lm_eval_files if n.startswith("results_"))
    (st.lm_eval_dir(rec.cell_id) / name).write_text("{}")
    assert [what for _, what in st.verify()] == ["lm-eval file checksum mismatch"]
    with pytest.raises(UserError, match="checksum mismatch"):
        st.lm_eval_file(rec, name)


def test_export_results_is_lm_eval_output_layout(swept, tmp_path):
    from lm_eval import utils
    from lm_eval.result_schema import EvalResults, SampleResult, _EvalConfig

    sweep, store, ctx = swept
    out = tmp_path / "lm-eval-out"
    proc = invoke("export-results", str(sweep), "--store", str(store), "--out", str(out))
    assert "wrote 30 files for 10 models" in proc.stdout, proc.stdout
    rel = [str(p.relative_to(out)) for p in sorted(out.rglob("*")) if p.is_file()]
    results_files = utils.get_results_filenames(rel)
    sample_files = utils.get_sample_results_filenames(rel)
    assert len(results_files) == 10 and len(sample_files) == 20 and len(rel) == 30
    for model_dir in sorted(p for p in out.iterdir()):
        mine = [f for f in rel if f.startswith(model_dir.name + "/")]
        results = json.loads((out / utils.get_latest_filename(utils.get_results_filenames(mine))).read_text())
        assert results["model_name_sanitized"] == model_dir.name == utils.sanitize_model_name(results["model_name"])
        assert set(results) - {"merge_study"} <= set(EvalResults.__annotations__)
        assert {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config", "date",
                "task_hashes", "model_name", "lm_eval_version", "total_evaluation_time_seconds"} <= set(results)
        assert set(results["config"]) == set(_EvalConfig.__annotations__)
        stamps = {utils.get_file_datetime(Path(f).name).removesuffix(".json") for f in mine}
        assert len(stamps) == 1  # one run: the results and samples files share their timestamp
        assert {utils.get_file_task_name(Path(f).name) for f in utils.get_sample_results_filenames(mine)} == \
            set(results["configs"]) == {"zoo_add", "zoo_capital_mc"}
    fixed = {k for k in SampleResult.__annotations__}
    for f in sample_files:
        for line in (out / f).read_text().splitlines():
            row = json.loads(line)
            assert fixed <= set(row), f
            assert all(isinstance(row[m], float) for m in row["metrics"])
    before = files_of(out)
    invoke("export-results", str(sweep), "--store", str(store), "--out", str(out))
    assert files_of(out) == before  # exporting again into lm-eval output rewrites the same files


def test_export_results_loads_with_datasets_as_lm_eval_publishes_them(swept, tmp_path):
    datasets = pytest.importorskip("datasets")
    sweep, store, _ = swept
    out = tmp_path / "out"
    invoke("export-results", "--store", str(store), "--out", str(out))
    samples = sorted(out.glob("*/samples_zoo_add_*.jsonl"))
    loaded = datasets.load_dataset("json", data_files=[str(p) for p in samples], split="train",
                                   cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 6 * len(samples) and "resps" in loaded.column_names
    results = datasets.load_dataset("json", data_files=str(next(out.glob("*/results_*.json"))), split="train",
                                    cache_dir=str(tmp_path / "cache"))
    assert "zoo_add" in results["results"][0]


def test_export_results_never_writes_into_another_directory(swept, tmp_path):
    sweep, store, _ = swept
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    proc = invoke("export-results", str(sweep), "--store", str(store), "--out", str(out), check=False)
    assert proc.returncode == 2 and "not lm-eval output" in proc.stderr and proc.stderr.count("\n") == 1
    assert files_of(out) == {"notes.txt": b"keep"}


@pytest.mark.slow
def test_files_match_what_lm_eval_itself_writes(swept, built_zoo, tmp_path):
    """The lm-eval CLI on a zoo task (~30 s): same keys at every level of both files."""
    import subprocess
    import sys

    from study.store import Store

    _, store, ctx = swept
    base = next(c for c in ctx.plan.unique_cells() if c.method == "base")
    st = Store(store, create=False)
    rec = st.get(base.cell_id)
    ours = {n.split("_")[0] + ("" if n.startswith("results") else n.split("_")[2]): st.lm_eval_file(rec, n)
            for n in rec.lm_eval_files}
    out = tmp_path / "lm"
    subprocess.run([str(Path(sys.executable).parent / "lm-eval"), "run", "--model", "hf", "--model_args",
                    f"pretrained={built_zoo.model('base')}", "--tasks", "zoo_add,zoo_capital_mc", "--include_path",
                    str(built_zoo.path / "tasks"), "--limit", "6", "--output_path", str(out), "--log_samples"],
                   check=True, capture_output=True, timeout=600)
    theirs_dir = next(out.iterdir())
    theirs = json.loads(next(theirs_dir.glob("results_*.json")).read_text())
    mine = json.loads(ours["results"])
    assert set(mine) - {"merge_study"} == set(theirs)
    assert set(mine["config"]) == set(theirs["config"])
    for task in theirs["results"]:
        assert set(mine["results"][task]) == set(theirs["results"][task])
        assert set(mine["configs"][task]) == set(theirs["configs"][task])
    assert mine["results"]["zoo_capital_mc"]["acc,none"] == theirs["results"]["zoo_capital_mc"]["acc,none"]
    assert mine["task_hashes"]["zoo_capital_mc"] == theirs["task_hashes"]["zoo_capital_mc"]  # same docs, prompts
    for task, short in (("zoo_add", "add"), ("zoo_capital_mc", "capital")):
        their_rows = [json.loads(x) for x in next(theirs_dir.glob(f"samples_{task}_*")).read_text().splitlines()]
        my_rows = [json.loads(x) for x in ours[f"samples{short}"].decode().splitlines()]
        assert [set(r) for r in my_rows] == [set(r) for r in their_rows]


# --- item 7: export ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", [m["name"] for m in METHODS])
def test_export_is_bit_identical_to_the_scored_merge(swept, tmp_path, method):
    from transformers import AutoModelForCausalLM

    from study.runner import CellRunner
    from study.store import Store

    sweep, store, ctx = swept
    cell = merge_cell(ctx, method)
    out = tmp_path / "exported"
    proc = invoke("export", str(sweep), cell.cell_id[:10], "--store", str(store), "--out", str(out))
    assert "merged on cpu" in proc.stdout and "note:" not in proc.stderr
    scored = CellRunner(ctx, Store(store, create=False)).weights(cell)
    got = tensors(out)
    assert set(got) == set(scored)
    for name, tensor in scored.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
    marker = json.loads((out / "merge_study.json").read_text())
    assert marker["exported_cell"] == cell.cell_id and marker["device"] == "cpu"
    AutoModelForCausalLM.from_pretrained(out)
    assert (out / "README.md").is_file()


def test_model_card_states_what_was_merged_and_how_it_scored(swept, tmp_path):
    from huggingface_hub import ModelCard

    from study.store import Store

    sweep, store, ctx = swept
    cell = merge_cell(ctx, "ties")
    out = tmp_path / "ties"
    invoke("export", str(sweep), cell.cell_id, "--store", str(store), "--out", str(out))
    text = (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md")
    assert "merge" in card.data.tags and card.data.eval_results
    rec = Store(store, create=False).get(cell.cell_id)
    assert "**ties**" in text and "density=0.5" in text and "trim_scope=tensor" in text
    for label in ("zoo:base", *cell.checkpoints):
        assert f"| {label} | zoo | {ctx.models[label].identity} |" in text
    for task, entry in rec.scores.items():
        assert f"| {task} | {entry['metric']} | {entry['score']:.4f} | {entry['stderr']:.4f} |" in text
    assert f"merge-study {rec.harness_version}" in text and f"lm-eval {rec.machine['lm_eval']}" in text
    assert "Code execution: off" in text


@pytest.mark.parametrize("method", ["task_arithmetic", "linear", "mergekit:task_arithmetic"])
def test_the_cards_mergekit_configuration_computes_the_same_merge(swept, tmp_path, method, mergekit_api):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    sweep, store, ctx = swept
    out = tmp_path / "exported"
    invoke("export", str(sweep), merge_cell(ctx, method).cell_id, "--store", str(store), "--out", str(out))
    text = (out / "README.md").read_text()
    config = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    run_merge(MergeConfiguration.model_validate(config), str(tmp_path / "theirs"),
              MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0))
    ours, theirs = tensors(out), tensors(tmp_path / "theirs")
    assert set(ours) == set(theirs)
    for name in ours:
        if method.startswith("mergekit:"):
            assert torch.equal(ours[name], theirs[name]), name  # the very configuration that ran
        else:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["ties", "slerp"])
def test_native_mergekit_namesakes_map_back(swept, method):
    from study.export import mergekit_equivalent

    _, _, ctx = swept
    config, why_not = mergekit_equivalent(ctx, merge_cell(ctx, method))
    assert config is not None and config["merge_method"] == method, why_not


def test_a_method_without_mergekit_counterpart_says_why(swept, tmp_path):
    sweep, store, ctx = swept
    out = tmp_path / "dare"
    cell = merge_cell(ctx, "dare_linear").cell_id
    proc = invoke("export", str(sweep), cell, "--store", str(store), "--out", str(out))
    assert "mergekit equivalent: none: no mergekit method computes dare_linear" in proc.stdout
    assert "None: no mergekit method computes dare_linear" in (out / "README.md").read_text()


def test_export_refuses_what_it_cannot_or_must_not_do(swept, tmp_path):
    sweep, store, ctx = swept
    ta = merge_cell(ctx, "task_arithmetic").cell_id
    base = next(c for c in ctx.plan.unique_cells() if c.method == "base").cell_id
    other = tmp_path / "someone-elses"
    other.mkdir()
    (other / "data.bin").write_bytes(b"precious")
    merged = tmp_path / "merged"
    invoke("merge", "--method", "linear", "--model", "zoo:add", "--model", "zoo:first", "--out", str(merged))
    before = files_of(tmp_path)
    zoo_model = str(ctx.models["zoo:add"].path)
    for args, message in [
        ([base, "--out", str(tmp_path / "x")], "is the base itself, not a merge"),
        (["deadbeef00", "--out", str(tmp_path / "x")], "no cell 'deadbeef00' in this sweep's plan"),
        ([ta, "--out", str(other)], "is not a merge output"),
        ([ta, "--out", str(other), "--force"], "is not a merge output"),
        ([ta, "--out", str(merged), "--force"], "holds a `merge` output, not an export"),
        ([ta, "--out", zoo_model], "is the input"),
        ([ta, "--out", str(Path(zoo_model) / "inner")], "lies inside the input"),
        ([ta, "--out", str(tmp_path / "x"), "--device", "cuda:7"], "cuda:7"),
    ]:
        proc = invoke("export", str(sweep), *args, "--store", str(store), check=False)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)
    assert files_of(tmp_path) == before


def test_force_replaces_only_a_previous_export(swept, tmp_path):
    sweep, store, ctx = swept
    ta, ties = merge_cell(ctx, "task_arithmetic").cell_id, merge_cell(ctx, "ties").cell_id
    out = tmp_path / "best"
    invoke("export", str(sweep), ta, "--store", str(store), "--out", str(out))
    first = files_of(out)
    proc = invoke("export", str(sweep), ties, "--store", str(store), "--out", str(out), check=False)
    assert proc.returncode == 2 and "holds a previous export: pass --force" in proc.stderr
    assert files_of(out) == first
    invoke("export", str(sweep), ties, "--store", str(store), "--out", str(out), "--force")
    assert json.loads((out / "merge_study.json").read_text())["exported_cell"] == ties
    (out / "mine.txt").write_text("x")
    proc = invoke("export", str(sweep), ta, "--store", str(store), "--out", str(out), "--force", check=False)
    assert proc.returncode == 2 and "mine.txt" in proc.stderr


# --- item 7: --push-to-hub, to the local hub of tests/fixtures/hub_server.py ------------------------------------
# It takes every file inline ("regular" upload mode); the real hub's Xet transfer of weights is not exercised.

WRITE_TOKEN = "hf_test_write_me"


def posts(hub) -> list[str]:
    return [r.path for r in hub.log if r.method == "POST"]


@pytest.mark.parametrize("upload", ["xet-pipeline", "single-commit"])
def test_push_to_hub_uploads_the_export_bit_for_bit(swept, online_hub, tmp_path, monkeypatch, upload):
    """Both of the client's ``upload_folder`` paths (the Xet pipeline it takes with hf_xet installed, and the
    single commit of HF_HUB_DISABLE_XET): ``snapshot_download`` from the hub gives back every file of the export,
    byte for byte, and its model card; pushing the same directory again makes no commit."""
    from huggingface_hub import HfApi, constants, snapshot_download

    from fixtures.hub_server import GITATTRIBUTES
    from study.export import push, push_target
    from study.store import Store

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", upload == "single-commit")
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    sweep, store, ctx = swept
    cell = merge_cell(ctx, "task_arithmetic")
    out = tmp_path / "exported"
    proc = invoke("export", str(sweep), cell.cell_id, "--store", str(store), "--out", str(out),
                  "--push-to-hub", "me/merged")
    repo = online_hub.repos["me/merged"]
    assert f"pushed {out} to me/merged: {online_hub.url}/me/merged/commit/{repo.commits[-1][0]}" in proc.stdout
    assert [p for p in posts(online_hub) if p != "/api/validate-yaml"] == [  # no LFS, no Xet: one commit
        "/api/repos/create", "/api/models/me/merged/preupload/main", "/api/models/me/merged/commit/main"]
    got = Path(snapshot_download("me/merged", endpoint=online_hub.url, cache_dir=tmp_path / "download"))
    assert files_of(got) == {**files_of(out), ".gitattributes": GITATTRIBUTES}
    for name, tensor in tensors(out).items():
        assert torch.equal(tensors(got)[name], tensor), name

    text = (got / "README.md").read_text()
    rec = Store(store, create=False).get(cell.cell_id)
    assert "**task_arithmetic**" in text and "lambda=0.5" in text
    for label in ("zoo:base", *cell.checkpoints):
        assert f"| {label} | zoo | {ctx.models[label].identity} |" in text  # revision, content identity
    for task, entry in rec.scores.items():
        assert f"| {task} | {entry['metric']} | {entry['score']:.4f} | {entry['stderr']:.4f} |" in text
    assert f"merge-study {rec.harness_version}" in text and f"lm-eval {rec.machine['lm_eval']}" in text
    config = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert config["merge_method"] == "task_arithmetic" and len(config["models"]) == cell.k
    info = HfApi(endpoint=online_hub.url).model_info("me/merged")
    assert "merge" in info.card_data.tags and not info.private

    commits = len(repo.commits)
    assert push_target("merged") == "me/merged"  # a bare name: the token's own namespace
    assert push(out, "me/merged").endswith(repo.commits[-1][0]) and len(repo.commits) == commits  # unchanged files


def test_push_to_hub_private(swept, online_hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    sweep, store, ctx = swept
    invoke("export", str(sweep), merge_cell(ctx, "linear").cell_id, "--store", str(store), "--out",
           str(tmp_path / "out"), "--push-to-hub", "me/secret", "--private")
    assert HfApi(endpoint=online_hub.url).model_info("me/secret").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=online_hub.url, token=False).model_info("me/secret")


@pytest.mark.parametrize("token, repo, message", [
    (None, "me/merged", "no hub token: log in with `hf auth login` or set HF_TOKEN"),
    ("hf_not_a_token", "me/merged", "does not accept your token (HTTP 401)"),
    ("hf_test_read_me", "me/merged", "your token (me) is read-only"),
    (WRITE_TOKEN, "me/not a name", "not a hub repository id"),
    (WRITE_TOKEN, "closed-port", "cannot be reached (ConnectError)"),
])
def test_a_push_that_cannot_work_fails_before_the_merge(swept, online_hub, tmp_path, monkeypatch, token, repo,
                                                        message):
    """One line, exit 2, and nothing written: neither the export nor anything on the hub."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    if repo == "closed-port":
        import socket

        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        repo = "me/merged"
    sweep, store, ctx = swept
    before = files_of(tmp_path)
    proc = invoke("export", str(sweep), merge_cell(ctx, "linear").cell_id, "--store", str(store), "--out",
                  str(tmp_path / "out"), "--push-to-hub", repo, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and proc.stderr.rstrip().endswith("nothing was written"), proc.stderr
    assert files_of(tmp_path) == before and "wrote" not in proc.stdout
    assert posts(online_hub) == [] and set(online_hub.repos) == set(default_repo_ids())


def default_repo_ids() -> list[str]:
    from fixtures.hub_server import default_repos

    return list(default_repos())


def test_push_to_hub_offline_fails_before_the_merge(swept, tmp_path):
    """The test session is offline (HF_HUB_OFFLINE=1)."""
    sweep, store, ctx = swept
    before = files_of(tmp_path)
    proc = invoke("export", str(sweep), merge_cell(ctx, "linear").cell_id, "--store", str(store), "--out",
                  str(tmp_path / "pushed"), "--push-to-hub", "me/merged", check=False)
    assert proc.returncode == 2 and "--push-to-hub me/merged: HF_HUB_OFFLINE is set" in proc.stderr
    assert proc.stderr.count("\n") == 1 and files_of(tmp_path) == before


@pytest.mark.parametrize("repo, message", [
    ("acme/merged", 'HTTP 403: You don\'t have the rights to create a model under the namespace "acme"'),
    ("acme/base", "HTTP 403: You don't have the rights to write to acme/base"),
])
def test_a_push_the_hub_refuses_keeps_the_export(swept, online_hub, tmp_path, monkeypatch, repo, message):
    """A token that may write, to a namespace that is not its own: the hub refuses at the push, after the merge;
    one line says so and the export is whole."""
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    sweep, store, ctx = swept
    out = tmp_path / "out"
    heads = {r: len(online_hub.repos[r].commits) for r in online_hub.repos}
    proc = invoke("export", str(sweep), merge_cell(ctx, "linear").cell_id, "--store", str(store), "--out", str(out),
                  "--push-to-hub", repo, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr and f"the export in {out} is complete" in proc.stderr, proc.stderr
    assert "wrote " in proc.stdout and (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert {r: len(online_hub.repos[r].commits) for r in online_hub.repos} == heads


def test_the_local_hub_refuses_writes_without_a_token_it_knows(online_hub, tmp_path):
    """The server itself: the client's own 401 (and 403) errors for each write endpoint."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    (tmp_path / "f.json").write_text("{}")
    for token, status in [(False, 401), ("hf_not_a_token", 401), ("hf_test_read_me", 403)]:
        api = HfApi(endpoint=online_hub.url, token=token)
        with pytest.raises(HfHubHTTPError) as create:
            api.create_repo("me/x")
        with pytest.raises(HfHubHTTPError) as upload:
            api.upload_file(path_or_fileobj=b"{}", path_in_repo="f.json", repo_id="acme/no-card")
        assert (create.value.response.status_code, upload.value.response.status_code) == (status, status), token
    assert "me/x" not in online_hub.repos and len(online_hub.repos["acme/no-card"].commits) == 1


# --- evaluation: standard errors, few-shot seeding, code execution --------------------------------------------


def unsafe_task(zoo, path: Path) -> Path:
    cfg = zoo.task_configs(["zoo:capital"])[0]
    cfg.update(task="zoo_capital_unsafe", unsafe_code=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_code_execution_is_refused_unless_allowed_and_is_in_the_cell_key(built_zoo, tmp_path):
    from study.config import parse_sweep
    from study.prepare import prepare

    task = str(unsafe_task(built_zoo, tmp_path / "unsafe.yaml"))
    doc = sweep_doc()
    doc["evaluation"]["tasks"] = [task]
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump(doc))
    proc = invoke("validate", str(sweep), check=False)
    assert proc.returncode == 2 and "zoo_capital_unsafe execute(s) code the model writes" in proc.stderr
    assert "evaluation.allow_code_execution: true" in proc.stderr
    off = prepare(parse_sweep({**doc, "evaluation": {**doc["evaluation"], "tasks": ["zoo:capital"]}}))
    on = prepare(parse_sweep({**doc, "evaluation": {**doc["evaluation"], "tasks": ["zoo:capital"],
                                                   "allow_code_execution": True}}))
    assert not {c.cell_id for c in off.plan.cells} & {c.cell_id for c in on.plan.cells}
    fewer = prepare(parse_sweep({**doc, "evaluation": {**doc["evaluation"], "tasks": ["zoo:capital"],
                                                      "bootstrap_iters": 0}}))
    assert not {c.cell_id for c in off.plan.cells} & {c.cell_id for c in fewer.plan.cells}


def test_allowed_code_execution_reaches_lm_eval_and_the_report(built_zoo, tmp_path):
    from study.analysis.provenance import code_execution_rows
    from study.config import EvaluationSpec, parse_sweep
    from study.errors import UserError
    from study.evaluate import Evaluator, resolve_tasks

    task = str(unsafe_task(built_zoo, tmp_path / "unsafe.yaml"))
    spec = EvaluationSpec(tasks=[task], limit=3, bootstrap_iters=0)
    with pytest.raises(UserError, match="allow_code_execution"):
        Evaluator(built_zoo.model("base"), spec, resolve_tasks(spec.tasks))
    allowed = spec.model_copy(update={"allow_code_execution": True})
    result = Evaluator(built_zoo.model("base"), allowed, resolve_tasks(spec.tasks)).evaluate()
    assert result.scores["zoo_capital_unsafe"]["stderr"] is None  # bootstrap_iters: 0 gives none
    doc = sweep_doc(allow_code_execution=True)
    assert code_execution_rows(parse_sweep(doc))[0][1].startswith("ON: ")
    assert code_execution_rows(parse_sweep(sweep_doc())) == []


def test_few_shot_examples_are_the_same_in_every_evaluation(built_zoo):
    from study.config import EvaluationSpec
    from study.evaluate import Evaluator, resolve_tasks

    spec = EvaluationSpec(tasks=["zoo:capital"], limit=4, num_fewshot=2, bootstrap_iters=0)
    evaluator = Evaluator(built_zoo.model("base"), spec, resolve_tasks(spec.tasks))
    prompts = [[r["arguments"] for r in evaluator.evaluate().lm_eval["samples"]["zoo_capital_mc"]] for _ in range(2)]
    assert prompts[0] == prompts[1] and "capital of" in prompts[0][0][0][0].split("\n\n")[0]


def test_samples_in_the_store_stay_gzipped_and_records_point_at_them(swept):
    from study.store import Store

    _, store, ctx = swept
    st = Store(store, create=False)
    rec = st.get(merge_cell(ctx, "linear").cell_id)
    name = next(n for n in rec.lm_eval_files if n.startswith("samples_"))
    raw = (st.lm_eval_dir(rec.cell_id) / f"{name}.gz").read_bytes()
    assert gzip.decompress(raw) == st.lm_eval_file(rec, name)
