"""The sweep schema: the contract shape parses, and every bad field is one line naming its YAML path."""

from __future__ import annotations

import pytest
import yaml

from study.config import KExpression, load_sweep, parse_sweep, resolve_value
from study.errors import ConfigError

CONTRACT = """
name: smoke
seed: 0
bases:
  - name: zoo
    model: zoo:base
    checkpoints: [zoo:add, zoo:copy, zoo:sort, zoo:capital]
methods:
  - name: task_arithmetic
    params: {lambda: [0.5, "1/k"]}
  - name: ties
    params: {density: 0.2, lambda: 1.0}
ks: [1, 2, 3]
subsets: {per_k: 2}
evaluation:
  tasks: [zoo:all]
  limit: 40
  batch_size: 16
  max_gen_toks: 64
  backend: hf
"""


def contract() -> dict:
    return yaml.safe_load(CONTRACT)


def test_contract_shape_parses():
    sweep = parse_sweep(contract())
    assert sweep.name == "smoke" and sweep.ks == [1, 2, 3]
    assert sweep.bases[0].checkpoints[1].model == "zoo:copy"
    assert sweep.methods[0].grid() == [{"lambda": 0.5}, {"lambda": "1/k"}]
    assert sweep.executor.kind == "local"


def test_hub_model_with_revision():
    data = contract()
    data["bases"][0]["model"] = {"model": "meta-llama/Llama-3.2-3B", "revision": "abc"}
    assert parse_sweep(data).bases[0].model.label == "meta-llama/Llama-3.2-3B@abc"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(extra=1), "extra: unknown field"),
        (lambda d: d["evaluation"].update(limt=3), "evaluation.limt: unknown field"),
        (lambda d: d["methods"][1].update(parms={}), "methods[1].parms: unknown field"),
        (lambda d: d.update(ks=[1, 5]), "k = [5]"),
        (lambda d: d.update(ks=[0, 2]), "k must be >= 1"),
        (lambda d: d["bases"][0].update(checkpoints=[]), "bases[0].checkpoints"),
        (lambda d: d["bases"][0].update(checkpoints=["zoo:add", "zoo:add"]), "duplicate checkpoint(s) zoo:add"),
        (lambda d: d["subsets"].update(per_k=0), "subsets.per_k"),
        (lambda d: d["evaluation"].update(batch_size="big"), "evaluation.batch_size"),
        (lambda d: d["evaluation"].update(backend="tpu"), "evaluation.backend"),
        (lambda d: d.pop("evaluation"), "evaluation: required field is missing"),
    ],
)
def test_bad_fields_name_their_yaml_path(mutate, expected):
    data = contract()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_sweep(data, "sweep.yaml")
    msg = str(err.value)
    assert msg.startswith("sweep.yaml: ") and expected in msg and "\n" not in msg


def test_yaml_syntax_error_has_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbases: [\n  - oops: : :\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: YAML syntax error"):
        load_sweep(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="sweep file not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_k_expression_is_parsed_never_evaluated():
    assert resolve_value("1/k", 4) == 0.25
    assert resolve_value("2/k", 4) == 0.5
    assert resolve_value("__import__('os')", 4) == "__import__('os')"
    assert KExpression.parse("1/k + 1") is None
    assert str(KExpression.parse("1/k")) == "1/k"
