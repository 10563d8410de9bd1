"""Whole-model adapters (``mergekit:<name>``, ``peft:<combination_type>``) and LoRA checkpoints as tensor
sources for native methods."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from study.errors import CheckpointError, MethodError, NotApplicable
from study.lora import LoraSource
from study.merge import merge_state_dict, open_inputs, write_merged
from study.methods.registry import get_method
from study.tensors import SafetensorsSource


def run(base, ckpts, name, **given):
    info = get_method(name)
    inputs = open_inputs(base if info.needs_base else None, ckpts)
    return merge_state_dict(inputs, info, info.resolve_params(given, len(ckpts)))


def peft_merged_state(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_source_materialises_what_peft_merges(llama_family, tmp_path, use_rslora):
    from fixtures.methods import make_lora_adapters

    (adapter,) = make_lora_adapters(
        llama_family.base, tmp_path, n=1, r=4, lora_alpha=16, use_rslora=use_rslora,
        target_modules=["q_proj", "o_proj", "gate_proj", "embed_tokens"],
    )
    src = LoraSource(adapter, SafetensorsSource(llama_family.base))
    expected = peft_merged_state(llama_family.base, adapter)
    assert len(src.modules) == 2 * 3 + 1
    for name in src.names():
        torch.testing.assert_close(src.get(name).float(), expected[name].float(), atol=1e-6, rtol=1e-5)


def test_native_task_arithmetic_on_lora_equals_peft_cat(lora_family):
    ours = run(lora_family.base, lora_family.checkpoints, "task_arithmetic", weight=[1.0, 0.5, 2.0])
    theirs = run(lora_family.base, lora_family.checkpoints, "peft:cat", weight=[1.0, 0.5, 2.0])
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["ties", "tsv_merge", "model_stock", "dare_ties"])
def test_native_methods_accept_lora_checkpoints(lora_family, name):
    merged = run(lora_family.base, lora_family.checkpoints, name)
    base = SafetensorsSource(lora_family.base)
    untouched = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged[untouched], base.get(untouched))
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], base.get("model.layers.0.self_attn.q_proj.weight"))


@pytest.mark.parametrize("combination", ["ties", "dare_linear", "svd", "magnitude_prune"])
def test_peft_combinations_run_and_are_reproducible(lora_family, combination):
    one = run(lora_family.base, lora_family.checkpoints, f"peft:{combination}")
    two = run(lora_family.base, lora_family.checkpoints, f"peft:{combination}")
    for name in one:
        assert torch.isfinite(one[name]).all() and torch.equal(one[name], two[name]), name


def test_peft_refuses_full_checkpoints(llama_family):
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        run(llama_family.base, llama_family.checkpoints[:2], "peft:ties")


def test_lora_with_another_base_is_refused(lora_family, tmp_path):
    bad = tmp_path / "other-base"
    shutil.copytree(lora_family.checkpoints[0], bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/other-model"
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="base_model_name_or_path is 'someone/other-model'"):
        open_inputs(lora_family.base, [bad])


def test_lora_with_wrong_shapes_is_refused(lora_family, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "wrong-shape"
    shutil.copytree(lora_family.checkpoints[0], bad)
    tensors = load_file(bad / "adapter_model.safetensors")
    key = next(k for k in tensors if "layers.0.self_attn.q_proj.lora_A" in k)
    tensors[key] = torch.zeros(tensors[key].shape[0], 48)
    save_file(tensors, bad / "adapter_model.safetensors")
    with pytest.raises(CheckpointError, match=r"q_proj\.weight: B·A gives shape \(32, 48\)"):
        open_inputs(lora_family.base, [bad])


def test_mergekit_schema_and_applicability(mergekit_api):
    ties = get_method("mergekit:ties")
    params = {p.name: p for p in ties.params}
    assert params["density"].per_model and not params["lambda"].per_model and params["normalize"].default is True
    slerp = get_method("mergekit:slerp")
    assert (slerp.min_k, slerp.max_k) == (1, 1)
    assert get_method("mergekit:model_stock").min_k == 2
    with pytest.raises(MethodError, match="mergekit has no merge method 'tie'"):
        get_method("mergekit:tie")
    with pytest.raises(MethodError, match="no combination_type"):
        get_method("peft:average")


def test_mergekit_adapter_through_the_driver(llama_family, mergekit_api, tmp_path):
    info = get_method("mergekit:della")
    inputs = open_inputs(llama_family.base, llama_family.checkpoints[:2])
    out = write_merged(inputs, info, info.resolve_params({"density": [0.5, 0.5]}, 2), tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(model(torch.tensor([[1, 5, 7]])).logits).all()
    with pytest.raises(NotApplicable):
        merge_state_dict(open_inputs(llama_family.base, llama_family.checkpoints[:2]), get_method("mergekit:slerp"), {"t": 0.5})
