"""The vLLM backend: what can be checked without a GPU here, and the real run where vllm is installed."""

from __future__ import annotations

import json

import pytest
import torch

from study.config import EvaluationSpec
from study.evaluate_vllm import VllmEvaluator, write_model_dir
from study.tensors import SafetensorsSource


def test_scratch_model_dir_loads_with_auto_classes(tmp_path, tiny_llama_family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = SafetensorsSource(tiny_llama_family.checkpoints[0])
    state = {n: src.get(n) for n in src.names()}
    out = write_model_dir(tiny_llama_family.base, state, tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        if name in state:
            assert torch.equal(tensor, state[name]), name


def test_worker_request_is_explicit(tmp_path, tiny_llama_family):
    spec = EvaluationSpec(tasks=["x"], limit=3, backend="vllm", vllm={"gpu_memory_utilization": 0.5})
    ev = VllmEvaluator.__new__(VllmEvaluator)
    ev.model_dir, ev.spec, ev.tasks, ev.trust_remote_code = tiny_llama_family.base, spec, [{"task": "t"}], False
    req = ev.request(tmp_path / "m", tmp_path / "out.json")
    assert json.loads(json.dumps(req))["spec"]["vllm"] == {"gpu_memory_utilization": 0.5}
    assert req["trust_remote_code"] is False and req["spec"]["limit"] == 3


@pytest.mark.gpu
def test_vllm_scores_a_model(tmp_path, built_zoo):
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    spec = EvaluationSpec(tasks=["zoo:all"], limit=10, backend="vllm", max_gen_toks=32,
                          vllm={"gpu_memory_utilization": 0.3, "max_model_len": 512})
    ev = VllmEvaluator(built_zoo.model("base"), spec, built_zoo.task_configs(["all"]))
    result = ev.evaluate(None)
    assert set(result.scores) == set(built_zoo.tasks)
