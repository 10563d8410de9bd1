"""`merge-study merge --config FILE.yml` writes what mergekit writes for the same configuration.

Configurations shaped like mergekit's own examples (linear with weights, TIES with per-model density and
weight gradients and a filter, task arithmetic with lambda, SLERP over slices with self_attn/mlp filters)
run through the CLI and through mergekit's ``run_merge`` (bit for bit the CLI's); the tensors must agree and
the output must load. The random ``llama_family`` is used because TIES' trim on the trained tiny models
meets many equal magnitudes, whose survivors are unspecified.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fixtures.sweeps import cli


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def linear(f):
    return {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": str(f.checkpoints[0]), "parameters": {"weight": 1.0}},
                       {"model": str(f.checkpoints[1]), "parameters": {"weight": 0.5}},
                       {"model": str(f.checkpoints[2]), "parameters": {"weight": 0.25}}]}


def ties_example(f):
    """mergekit's README TIES example: per-model density and weight gradients, a filtered weight."""
    return {"merge_method": "ties", "base_model": str(f.base), "dtype": "float32",
            "parameters": {"normalize": True, "int8_mask": True},
            "models": [{"model": str(f.checkpoints[0]), "parameters": {"density": [1, 0.7, 0.1], "weight": 1.0}},
                       {"model": str(f.checkpoints[1]), "parameters": {"density": 0.5, "weight": [0, 0.3, 0.7, 1]}},
                       {"model": str(f.checkpoints[2]),
                        "parameters": {"density": 0.33, "weight": [{"filter": "mlp", "value": 0.5}, {"value": 0}]}}]}


def ties_shared_density(f):
    """TIES whose density gradient is shared by the models, so native TIES can take it per tensor."""
    cfg = ties_example(f)
    cfg["parameters"] = {"normalize": True, "density": [0.9, 0.4]}
    for m in cfg["models"]:
        m["parameters"].pop("density")
    return cfg


def task_arithmetic(f):
    return {"merge_method": "task_arithmetic", "base_model": str(f.base), "dtype": "float32",
            "parameters": {"lambda": 0.7},
            "models": [{"model": str(f.checkpoints[0]), "parameters": {"weight": [1.0, 0.3]}},
                       {"model": str(f.checkpoints[1]),
                        "parameters": {"weight": [{"filter": "mlp", "value": 0.5}, {"value": 0.8}]}},
                       {"model": str(f.base)}]}


def slerp(f):
    """mergekit's README SLERP example: slices covering every layer, t gradients filtered by module."""
    return {"merge_method": "slerp", "base_model": str(f.checkpoints[0]), "dtype": "float32",
            "slices": [{"sources": [{"model": str(f.checkpoints[0]), "layer_range": [0, 2]},
                                    {"model": str(f.checkpoints[1]), "layer_range": [0, 2]}]}],
            "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
                                 {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
                                 {"value": 0.5}]}}


def breadcrumbs(f):
    return {"merge_method": "breadcrumbs", "base_model": str(f.base), "dtype": "float32",
            "parameters": {"density": 0.8, "gamma": 0.05},
            "models": [{"model": str(c), "parameters": {"weight": w}} for c, w in zip(f.checkpoints, [1.0, 0.6])]}


def breadcrumbs_ties(f):
    """Breadcrumbs with TIES' sign election, mergekit's default normalize: false and then true."""
    return {"merge_method": "breadcrumbs_ties", "base_model": str(f.base), "dtype": "float32",
            "parameters": {"density": 0.7, "gamma": 0.05},
            "models": [{"model": str(c), "parameters": {"weight": w}} for c, w in zip(f.checkpoints, [1.0, 0.6, 0.3])]}


def breadcrumbs_ties_normalized(f):
    cfg = breadcrumbs_ties(f)
    cfg["parameters"]["normalize"] = True
    return cfg


def ties_unnormalized(f):
    cfg = ties_shared_density(f)
    cfg["parameters"]["normalize"] = False
    return cfg


def sce(f):
    """SCE with variance selection (mergekit's sce takes no per-model weight)."""
    return {"merge_method": "sce", "base_model": str(f.base), "dtype": "float32",
            "parameters": {"select_topk": 0.3}, "models": [{"model": str(c)} for c in f.checkpoints]}


def half_precision(f):
    """mergekit computes in float16 here; native merges compute in float32, so mergekit runs it."""
    return {**task_arithmetic(f), "dtype": "float16"}


def one_layer_slices(f):
    """Slices that rebuild the model from one layer each: not the base's layout, so mergekit runs it."""
    return {**slerp(f), "slices": [{"sources": [{"model": str(f.checkpoints[0]), "layer_range": [i, i + 1]},
                                                {"model": str(f.checkpoints[1]), "layer_range": [i, i + 1]}]}
                                   for i in (1, 0)]}


CASES = [
    (linear, "native"),
    (ties_example, "mergekit"),  # the models' densities differ; native TIES takes one density
    (ties_shared_density, "native"),
    (task_arithmetic, "native"),
    (slerp, "native"),
    (breadcrumbs, "native"),
    (breadcrumbs_ties, "native"),
    (breadcrumbs_ties_normalized, "native"),
    (ties_unnormalized, "native"),
    (sce, "native"),
    (half_precision, "mergekit"),
    (one_layer_slices, "mergekit"),
]


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def mergekit_reference(cfg: dict, out: Path) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    run_merge(MergeConfiguration.model_validate(cfg), str(out),
              MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0))
    return out


@pytest.mark.parametrize("make, runner", CASES, ids=[c[0].__name__ for c in CASES])
def test_config_merge_equals_mergekit(llama_family, mergekit_api, tmp_path, make, runner):
    from transformers import AutoModelForCausalLM

    cfg = make(llama_family)
    ours = tmp_path / "ours"
    proc = cli("merge", "--config", str(write_config(cfg, tmp_path / "config.yml")), "--out", str(ours))
    assert f", {runner}" in proc.stdout, proc.stdout
    theirs = mergekit_reference(cfg, tmp_path / "theirs")
    a, b = tensors(ours), tensors(theirs)
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    model = AutoModelForCausalLM.from_pretrained(ours)
    assert model.config.num_hidden_layers == AutoModelForCausalLM.from_pretrained(theirs).config.num_hidden_layers
    if runner == "mergekit":
        assert a.keys() and all(torch.equal(a[n], b[n]) for n in a)  # the same run of mergekit


@pytest.mark.parametrize("edit, key", [
    (lambda c: c.update(normalise=True), "normalise"),
    (lambda c: c["models"][0]["parameters"].update(wieght=1.0), "models[0].parameters.wieght"),
    (lambda c: c["parameters"].update(lamda=0.5), "parameters.lamda"),
    (lambda c: c["models"][1]["parameters"]["weight"][0].update(filtr="mlp"), "models[1].parameters.weight[0].filtr"),
])
def test_unsupported_key_is_one_line_naming_it(llama_family, tmp_path, edit, key):
    cfg = task_arithmetic(llama_family)
    edit(cfg)
    proc = cli("merge", "--config", str(write_config(cfg, tmp_path / "c.yml")), "--out", str(tmp_path / "o"),
               check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_unknown_merge_method_and_missing_required_parameter(llama_family, tmp_path):
    cfg = {**linear(llama_family), "merge_method": "lineer"}
    proc = cli("merge", "--config", str(write_config(cfg, tmp_path / "a.yml")), "--out", str(tmp_path / "o"),
               check=False)
    assert proc.returncode == 2 and "merge_method" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    cfg = linear(llama_family)
    cfg["models"][0].pop("parameters")
    proc = cli("merge", "--config", str(write_config(cfg, tmp_path / "b.yml")), "--out", str(tmp_path / "o"),
               check=False)
    assert proc.returncode == 2 and "weight" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags", [["--method", "linear"], ["--model", "x"], ["--base", "x"], ["--set", "weight=1"]])
def test_config_excludes_the_other_merge_options(llama_family, tmp_path, flags):
    path = write_config(linear(llama_family), tmp_path / "c.yml")
    proc = cli("merge", "--config", str(path), *flags, "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and flags[0] in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("make", [linear, half_precision], ids=["native", "mergekit"])
def test_out_safety(llama_family, tmp_path, make):
    path = write_config(make(llama_family), tmp_path / "c.yml")

    def merge(out: Path, *extra: str):
        return cli("merge", "--config", str(path), "--out", str(out), *extra, check=False)

    before = sorted(p.name for p in llama_family.checkpoints[0].iterdir())
    refused = merge(llama_family.checkpoints[0], "--force")
    assert refused.returncode == 2 and "input" in refused.stderr
    assert sorted(p.name for p in llama_family.checkpoints[0].iterdir()) == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert merge(foreign, "--force").returncode == 2 and (foreign / "notes.txt").read_text() == "keep"
    out = tmp_path / "out"
    assert merge(out).returncode == 0
    again = merge(out)
    assert again.returncode == 2 and "--force" in again.stderr
    assert merge(out, "--force").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yml", "foreign", "out"]  # no staging left behind
