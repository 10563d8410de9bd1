"""``check_compatible``: one clear error per incompatible checkpoint, from headers and config.json only."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from study.compat import check_compatible
from study.errors import CheckpointError


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def rewrite_tensors(path, fn):
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    fn(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_compatible_family_and_lora_pass(llama_family, lora_family):
    check_compatible(llama_family.base, llama_family.checkpoints)
    check_compatible(lora_family.base, lora_family.checkpoints)


def test_other_architecture_is_named(llama_family, qwen3_family):
    with pytest.raises(CheckpointError, match=r"config model_type is 'qwen3', the base has 'llama'"):
        check_compatible(llama_family.base, [llama_family.checkpoints[0], qwen3_family.checkpoints[0]])


def test_layer_count(llama_family, tmp_path):
    bad = copy(llama_family.checkpoints[0], tmp_path / "c")
    edit_config(bad, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=rf"checkpoint {bad}: config num_hidden_layers is 3, the base has 2"):
        check_compatible(llama_family.base, [bad])


def test_missing_tensor_and_shape(llama_family, tmp_path):
    missing = copy(llama_family.checkpoints[0], tmp_path / "missing")
    rewrite_tensors(missing, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"tensor model.layers.1.mlp.up_proj.weight is missing"):
        check_compatible(llama_family.base, [missing])
    shaped = copy(llama_family.checkpoints[0], tmp_path / "shaped")
    rewrite_tensors(shaped, lambda t: t.update({"model.norm.weight": torch.ones(33)}))
    with pytest.raises(CheckpointError, match=r"tensor model.norm.weight has shape \(33,\), expected \(32,\)"):
        check_compatible(llama_family.base, [shaped])


def test_vocabulary_rows_refused_unless_truncated(llama_family, tmp_path):
    bigger = copy(llama_family.checkpoints[0], tmp_path / "bigger")

    def grow(t):
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            t[name] = torch.cat([t[name], torch.zeros(4, t[name].shape[1])])

    rewrite_tensors(bigger, grow)
    edit_config(bigger, vocab_size=88)
    with pytest.raises(CheckpointError, match=r"vocab_size is 88, the base has 84 \(set merge.vocab_mismatch: truncate"):
        check_compatible(llama_family.base, [bigger])
    check_compatible(llama_family.base, [bigger], vocab_mismatch="truncate")


def test_quantised_dtype_is_refused(llama_family, tmp_path):
    bad = copy(llama_family.checkpoints[0], tmp_path / "int8")
    rewrite_tensors(bad, lambda t: t.update({"model.norm.weight": t["model.norm.weight"].to(torch.int8)}))
    with pytest.raises(CheckpointError, match=r"model.norm.weight has dtype int8, expected a float dtype"):
        check_compatible(llama_family.base, [bad])


def test_bf16_checkpoint_of_fp32_base_is_fine(llama_family, tmp_path):
    half = copy(llama_family.checkpoints[0], tmp_path / "bf16")
    rewrite_tensors(half, lambda t: t.update({k: v.to(torch.bfloat16) for k, v in t.items()}))
    check_compatible(llama_family.base, [half])


def test_reads_no_tensor_data(llama_family, monkeypatch):
    import safetensors

    def refuse(*args, **kwargs):
        raise AssertionError("check_compatible opened tensor data")

    monkeypatch.setattr(safetensors, "safe_open", refuse)
    check_compatible(llama_family.base, llama_family.checkpoints)
