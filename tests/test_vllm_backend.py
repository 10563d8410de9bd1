"""The vLLM backend: its settings and swap logic everywhere, and the real engine where vLLM is installed.

Tests marked ``vllm`` run in the venv of ``scripts/vllm_env.sh`` (``.venv-vllm/bin/python -m pytest -m vllm``):
a resident engine with weights swapped in place must score exactly what a fresh engine on the same weights
scores, for a sequence of cells going back and forth between models, and what the HF backend scores.
"""

from __future__ import annotations

import os

import pytest
import torch

from study.config import EvaluationSpec
from study.errors import UserError
from study.evaluate import EvalResult
from study.evaluate_vllm import ENSEMBLE_NOTE, VllmEvaluator, configure_vllm_environment, engine_args, write_model_dir
from study.record import Outcome, Record
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


def test_engine_args_are_explicit_and_the_sweep_overrides_them(tiny_llama_family, tmp_path):
    import json

    spec = EvaluationSpec(tasks=["x"], backend="vllm", seed=7)
    args = engine_args(tiny_llama_family.base, spec)
    n_pos = json.loads((tiny_llama_family.base / "config.json").read_text())["max_position_embeddings"]
    assert args == {"dtype": "float32", "max_model_len": n_pos, "enforce_eager": True,
                    "distributed_executor_backend": "uni", "seed": 7}
    over = EvaluationSpec(tasks=["x"], backend="vllm", vllm={"max_model_len": 64, "gpu_memory_utilization": 0.5})
    assert engine_args(tiny_llama_family.base, over)["max_model_len"] == 64
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(UserError, match="max_model_len"):
        engine_args(tmp_path, spec)


def test_environment_defaults_never_override_the_user(monkeypatch):
    for var in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_TARGET_DEVICE", "VLLM_CPU_KVCACHE_SPACE", "OMP_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        configure_vllm_environment()
        # torch read OMP_NUM_THREADS at import: the variable alone would leave this process on 2 threads
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and os.environ["VLLM_TARGET_DEVICE"] == "cpu"
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "4" and os.environ["OMP_NUM_THREADS"] == "1"
    monkeypatch.delenv("VLLM_TARGET_DEVICE")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    configure_vllm_environment()
    assert "VLLM_TARGET_DEVICE" not in os.environ


class _Engine:
    """Stands in for ``vllm.LLM``: records swaps, or refuses them."""

    def __init__(self, refuse: bool = False):
        self.refuse, self.calls = refuse, []

    def collective_rpc(self, method, kwargs):
        if self.refuse:
            raise RuntimeError("shape mismatch\nsecond line")
        self.calls.append((method, sorted(kwargs)))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache", []))


def _fake_evaluator(monkeypatch, tmp_path, tiny_llama_family, refuse: bool):
    ev = VllmEvaluator.__new__(VllmEvaluator)
    ev.model_dir, ev.spec = tiny_llama_family.base, EvaluationSpec(tasks=["x"], backend="vllm")
    ev.engine_starts, ev.engine_id, ev._fresh_dir = 1, "p-1", None
    ev.lm = type("LM", (), {"model": _Engine(refuse)})()
    started = []

    def start(model_dir):
        started.append(model_dir)
        ev.engine_starts, ev.engine_id = ev.engine_starts + 1, f"p-{ev.engine_starts + 1}"
        return type("LM", (), {"model": _Engine()})()

    monkeypatch.setattr(ev, "_start", start)
    monkeypatch.setattr(ev, "_run", lambda lm: EvalResult({"t": {"score": 1.0}}))
    monkeypatch.setenv("MERGE_STUDY_SCRATCH", str(tmp_path))
    return ev, started


def test_a_cell_swaps_weights_in_place_then_empties_the_prefix_cache(monkeypatch, tmp_path, tiny_llama_family):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    ev, started = _fake_evaluator(monkeypatch, tmp_path, tiny_llama_family, refuse=False)
    result = ev.evaluate({"w": torch.zeros(2)})
    assert ev.lm.model.calls == [("reload_weights", ["weights_iterator"]), ("reset_prefix_cache", [])]
    assert not started and result.backend == {"name": "vllm", "engine": "resident", "engine_id": "p-1",
                                              "engine_starts": 1}
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # engine in another process: via a scratch file
    ev.evaluate({"w": torch.zeros(2)})
    assert ev.lm.model.calls[2] == ("reload_weights", ["weights_path"]) and not list(tmp_path.iterdir())


def test_a_failed_swap_starts_a_fresh_engine_and_the_record_says_so(monkeypatch, tmp_path, tiny_llama_family):
    ev, started = _fake_evaluator(monkeypatch, tmp_path, tiny_llama_family, refuse=True)
    src = SafetensorsSource(tiny_llama_family.checkpoints[0])
    result = ev.evaluate({n: src.get(n) for n in src.names()})
    assert len(started) == 1 and (started[0] / "model.safetensors").is_file()
    assert result.backend["engine"] == "fresh: weight swap failed (RuntimeError: shape mismatch)"
    assert result.backend["engine_starts"] == 2
    assert ev.evaluate({"w": torch.zeros(2)}).backend["engine"] == "resident"  # the new engine stays resident


def test_the_backend_note_is_kept_in_the_record(tiny_llama_family):
    from study.plan import Cell

    cell = Cell(cell_id="c", base="b", method="base", params={}, resolved_params={}, k=0, subset_id=0, checkpoints=())
    rec = Record.new(cell, Outcome.DONE, worker="w", backend={"name": "vllm", "engine": "resident"})
    assert Record.from_bytes(rec.to_bytes()).backend == {"name": "vllm", "engine": "resident"}


# --- the real engine (vllm installed: scripts/vllm_env.sh) ---------------------------------------------------

ZOO_SPEC = dict(tasks=["zoo:all"], limit=20, batch_size=32, max_gen_toks=48)


@pytest.fixture(scope="module")
def resident(built_zoo):
    import vllm  # noqa: F401  (the vllm tier runs where it is installed: a missing vllm fails, never skips)
    from study.evaluate import resolve_tasks

    spec = EvaluationSpec(**ZOO_SPEC, backend="vllm")
    return VllmEvaluator(built_zoo.model("base"), spec, resolve_tasks(spec.tasks))


def _comparable(result: EvalResult):
    return {t: s["score"] for t, s in result.scores.items()}, sorted(result.samples, key=lambda s: (s["task"], s["doc_id"]))


@pytest.mark.vllm
def test_resident_engine_scores_what_a_fresh_engine_scores(request, zoo_cell_states, built_zoo, tmp_path):
    """Exact equality, scores and every sample: both engines run the same kernels on the same weights.

    The fresh engines run (one at a time) before the resident one starts: in-process engines share the
    process's parallel state, and dropping one while another lives breaks the survivor.
    """
    from study.evaluate import resolve_tasks

    spec = EvaluationSpec(**ZOO_SPEC, backend="vllm")
    tasks = resolve_tasks(spec.tasks)
    fresh = {}
    for label, state in zoo_cell_states:
        ev = VllmEvaluator(write_model_dir(built_zoo.model("base"), state, tmp_path / label), spec, tasks)
        fresh[label] = _comparable(ev.evaluate(None))
        ev.lm = None
        del ev
    resident = request.getfixturevalue("resident")
    seen = {}
    for label, state in zoo_cell_states:
        got = resident.evaluate(state)
        assert got.backend["engine"] == "resident" and got.backend["engine_starts"] == 1, label
        seen[label] = _comparable(got)
        assert seen[label] == fresh[label], label
    assert seen["base again"] == seen["base"]
    assert seen["add"][0] != seen["base"][0] and seen["merge"][0] != seen["add"][0]


@pytest.mark.vllm
def test_vllm_scores_equal_the_hf_backend_on_the_zoo(resident, zoo_cell_states, built_zoo):
    """Every task score equal, and every multiple-choice pick and generated response equal.

    Tolerance: none on scores. vLLM's CPU kernels and HF's differ in float32 summation order (log-likelihoods
    agree to ~1e-5), and each score is a mean of per-document 0/1 outcomes, so only a near-tie between two
    choices or two next tokens could move a score, by one document (1/limit). The zoo's models are trained
    far from such ties, so any difference here is a real bug (wrong weights, wrong prompt, wrong stop).
    """
    from study.evaluate import Evaluator

    hf = Evaluator(built_zoo.model("base"), EvaluationSpec(**ZOO_SPEC), resident.tasks)
    for label, state in zoo_cell_states:
        v_scores, v_samples = _comparable(resident.evaluate(state))
        h_scores, h_samples = _comparable(hf.evaluate(state))
        assert v_scores == h_scores, label
        assert v_samples == h_samples, label


@pytest.mark.vllm
def test_the_ensemble_is_scored_by_hf_and_says_so(resident, zoo_cell_states):
    _, add = zoo_cell_states[1]
    ens = resident.evaluate_ensemble([add, add])
    assert ens.backend == {"name": "hf", "note": ENSEMBLE_NOTE}
    assert _comparable(ens)[0] == _comparable(resident.evaluate(add))[0]
