"""The statistics pass: calibration sources and their check against evaluated documents, what each statistic
computes (against independent hooks and autograd), and the on-disk cache (each statistic computed once per
model identity and calibration set, counted; a changed calibration file recomputes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from study.errors import MethodError
from study.merge import open_inputs
from study.statistics import COMPUTED, CalibrationSpec, StatisticRequest, gather, parse_calibration
from study.statistics.calibration import _check_disjoint, _zoo_evaluated_prompts, calibration_texts
from study.statistics.compute import compute_statistic, load_model

SHORT = CalibrationSpec(sequences=8)


def test_zoo_calibration_is_training_text_never_an_evaluated_prompt():
    texts = calibration_texts(CalibrationSpec(sequences=64))
    assert len(texts) == 64 and texts == calibration_texts(CalibrationSpec(sequences=64))
    assert calibration_texts(SHORT) == texts[:8]
    assert all(t.startswith("Q: ") and "\nA: " in t for t in texts)
    evaluated = _zoo_evaluated_prompts()
    assert evaluated and not any(t.startswith(p) for t in texts for p in evaluated)
    leaked = sorted(evaluated)[0] + " 7\n"
    with pytest.raises(MethodError, match="evaluated document"):
        _check_disjoint([*texts[:3], leaked], evaluated, "zoo")


def test_parse_calibration(tmp_path):
    assert parse_calibration("zoo", sequences=5) == CalibrationSpec(sequences=5)
    spec = parse_calibration("lm_eval:zoo:add")
    assert (spec.source, spec.task, spec.split) == ("lm_eval", "zoo:add", None)
    spec = parse_calibration("lm_eval:arc_easy:validation")
    assert (spec.task, spec.split) == ("arc_easy", "validation")
    with pytest.raises(MethodError, match="not a text file"):
        parse_calibration(str(tmp_path / "missing.txt"), method="regmean")


def _task(tmp_path: Path, train: list[dict], test: list[dict]) -> Path:
    for split, docs in (("train", train), ("test", test)):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = {"task": "calib_demo", "dataset_path": "json", "output_type": "generate_until",
           "dataset_kwargs": {"data_files": {s: str(tmp_path / f"{s}.jsonl") for s in ("train", "test")}},
           "training_split": "train", "test_split": "test", "doc_to_text": "Q: {{question}}\nA:",
           "doc_to_target": "answer", "target_delimiter": " "}
    import yaml

    path = tmp_path / "calib_demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_lm_eval_calibration_uses_train_docs_and_refuses_evaluated_ones(tmp_path):
    train = [{"question": f"what is {i}?", "answer": str(i)} for i in range(5)]
    test = [{"question": f"what is {i}?", "answer": str(i)} for i in range(100, 103)]
    task = _task(tmp_path, train, test)
    texts = calibration_texts(CalibrationSpec(source="lm_eval", task=str(task), sequences=3))
    assert texts == [f"Q: what is {i}?\nA: {i}" for i in range(3)]
    with pytest.raises(MethodError, match="has no validation split"):
        calibration_texts(CalibrationSpec(source="lm_eval", task=str(task), split="validation"))
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    task = _task(leaky, [*train, test[1]], test)
    with pytest.raises(MethodError, match="also an evaluated document"):
        calibration_texts(CalibrationSpec(source="lm_eval", task=str(task), sequences=10))


def test_gram_and_activations_are_the_layer_inputs(llama_family):
    model, tok = load_model(llama_family.base, None, "cpu")
    texts = calibration_texts(SHORT)
    name = "model.layers.1.mlp.down_proj"
    seen: list[torch.Tensor] = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1]).detach()))
    gram = compute_statistic("gram", model, tok, texts, 512, "cpu")
    handle.remove()
    x = torch.cat(seen).double()
    assert torch.allclose(gram[f"{name}.weight"].double(), x.T @ x / x.shape[0], rtol=1e-5, atol=1e-6)
    act = compute_statistic("act_abs_mean", model, tok, texts, 512, "cpu")
    assert torch.allclose(act[f"{name}.weight"].double(), x.abs().mean(0), rtol=1e-5, atol=1e-6)
    assert "lm_head.weight" not in gram and len(gram) == 14  # 7 linears x 2 layers


def test_fisher_is_mean_squared_sequence_gradient(llama_family):
    model, tok = load_model(llama_family.base, None, "cpu")
    texts = calibration_texts(SHORT)
    fisher = compute_statistic("fisher_diag", model, tok, texts, 512, "cpu")
    param = dict(model.named_parameters())["model.norm.weight"]
    squares = []
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids
        (grad,) = torch.autograd.grad(model(input_ids=ids, labels=ids).loss, param)
        squares.append(grad.square())
    assert torch.allclose(fisher["model.norm.weight"], torch.stack(squares).mean(0), rtol=1e-5, atol=1e-12)
    assert set(fisher) == set(dict(model.named_parameters()))


def test_each_statistic_is_computed_once_per_model_and_calibration(llama_family, tmp_path):
    root = tmp_path / "stats"
    req = StatisticRequest(statistic="act_abs_mean", calibration=SHORT)
    before = len(COMPUTED)
    first = gather(open_inputs(llama_family.base, llama_family.checkpoints[:2]), [req], root)
    again = gather(open_inputs(llama_family.base, llama_family.checkpoints[1:3]), [req], root)
    assert len(COMPUTED) - before == 3  # checkpoints 0, 1, 2: checkpoint 1 was reused
    assert first.files[("act_abs_mean", "checkpoints")][1] == again.files[("act_abs_mean", "checkpoints")][0]
    name = "model.layers.0.self_attn.q_proj.weight"
    assert [t.shape for t in again.checkpoints("act_abs_mean", name)] == [(32,), (32,)]
    assert again.checkpoints("act_abs_mean", "model.norm.weight") is None
    text = tmp_path / "calib.txt"
    text.write_text("one two three\nfour five\n")
    by_file = StatisticRequest(statistic="act_abs_mean", of="base", calibration=parse_calibration(str(text)))
    gather(open_inputs(llama_family.base, llama_family.checkpoints[:1]), [by_file], root)
    gather(open_inputs(llama_family.base, llama_family.checkpoints[:1]), [by_file], root)
    assert len(COMPUTED) - before == 4
    text.write_text("six seven\n")  # same path, new content: a new key
    gather(open_inputs(llama_family.base, llama_family.checkpoints[:1]), [by_file], root)
    assert len(COMPUTED) - before == 5
