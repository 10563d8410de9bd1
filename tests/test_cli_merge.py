"""`merge-study merge` writes a loadable HF directory equal to mergekit's merge of the same inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fixtures.sweeps import cli


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def mergekit_merge(method: str, base: Path, models: list[Path], out: Path, params: dict, normalize: bool) -> Path:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    cfg = MergeConfiguration.model_validate({
        "merge_method": method,
        "base_model": str(base),
        "models": [{"model": str(m), "parameters": {"weight": 1.0, **({"density": params["density"]} if "density" in params else {})}} for m in models],
        "parameters": {"normalize": normalize, **({"lambda": params["lambda"]} if "lambda" in params else {})},
        "dtype": "float32",  # mergekit computes in this dtype; ours computes in float32 and casts to the base's
    })
    run_merge(cfg, str(out), MergeOptions(device="cpu", copy_tokenizer=True, quiet=True, random_seed=0))
    return out


@pytest.mark.parametrize("family_name, method, params, normalize, skip_embeddings", [
    ("tiny_llama_family", "task_arithmetic", {"lambda": 0.7}, False, False),
    ("tiny_qwen3_family", "task_arithmetic", {"lambda": 0.7}, False, False),
    ("llama_family", "ties", {"density": 0.5, "lambda": 1.0}, True, True),
    # The Qwen3 family is bf16, whose few distinct magnitudes make ties at the trim threshold common: both keep
    # exactly floor(density*n) entries, and with mergekit's sort made stable both keep the lowest indices.
    ("qwen3_family", "ties", {"density": 0.3, "lambda": 1.0}, True, True),
])
def test_cli_merge_equals_mergekit(request, monkeypatch, tmp_path, family_name, method, params, normalize,
                                   skip_embeddings):
    family = request.getfixturevalue(family_name)
    ours = tmp_path / "ours"
    sets = [x for k, v in params.items() for x in ("--set", f"{k}={v}")]
    cli("merge", "--method", method, "--base", str(family.base), *[x for m in family.checkpoints for x in ("--model", str(m))],
        *sets, "--out", str(ours))
    argsort = torch.argsort  # mergekit's magnitude trim: argsort(|x|, descending=True)[:k], unstable on the CPU
    monkeypatch.setattr(torch, "argsort", lambda t, *a, **kw: argsort(t, *a, **{**kw, "stable": True}))
    theirs = mergekit_merge(method, family.base, family.checkpoints, tmp_path / "theirs", params, normalize)
    a, b = tensors(ours), tensors(theirs)
    b = {n: t.to(a[n].dtype) for n, t in b.items() if n in a}
    assert set(a) == set(b)
    compared = 0
    for name in a:
        if skip_embeddings and ("embed_tokens" in name or "lm_head" in name):
            continue
        if method == "task_arithmetic":
            assert torch.equal(a[name], b[name]), name
        else:
            tol = {"rtol": 1e-6, "atol": 1e-7} if a[name].dtype == torch.float32 else {}
            torch.testing.assert_close(a[name], b[name], **tol, msg=name)
        compared += 1
    assert compared > 10

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ours)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()
