"""bench/cost_model.py: the resident-engine rule, the assumed/measured flags, and a GPU check's measured input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cm():
    spec = importlib.util.spec_from_file_location("cost_model", REPO / "bench" / "cost_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_model"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("cost_model", None)


def _values(cm, **over):
    return {**{n: i.value for n, i in cm.INPUTS.items()}, **over}


def _gpu_check_json(tmp_path, device="cuda:0", shapes=None):
    path = tmp_path / "gpu_check.json"
    path.write_text(json.dumps({
        "check": "gpu_check", "device": device, "degenerate": device == "cpu",
        "environment": {"gpu": "NVIDIA H200"},
        "svd": {"raw_svd_s_by_shape": shapes if shapes is not None else {"4096x14336": 0.8, "4096x4096": 0.3}},
    }))
    return path


def test_resident_uses_the_ratio_until_the_floor_binds(cm):
    assert cm.resident_seconds(100.0, 10.0, 4.0) == (25.0, False)
    assert cm.resident_seconds(100.0, 30.0, 4.0) == (30.0, True)


def test_resident_cell_between_its_floor_and_a_fresh_engine(cm):
    for ratio in (1.0, 4.2, 35.35, 1000.0):
        for prefill in (1e3, 1e4, 1e6):
            s = cm.cell_seconds("ties", 4, 8e9, 224, _values(cm, resident_ratio=ratio, prefill_tok_s=prefill))
            assert s["eval_vllm"] + s["swap_vllm"] <= s["vllm_resident"] <= s["vllm_fresh"]
    # a fast evaluation leaves start-up as most of a fresh cell: then the measured ratio decides
    fast = cm.cell_seconds("ties", 4, 8e9, 224, _values(cm, prefill_tok_s=1e8, decode_tok_s=1e8))
    assert not fast["resident_floor"]
    assert fast["vllm_resident"] == pytest.approx(fast["vllm_fresh"] / cm.INPUTS["resident_ratio"].value)


def test_svd_methods_pay_svds_and_base_cells_no_merge(cm):
    v = _values(cm)
    assert cm.cell_seconds("base", 1, 8e9, 224, v)["merge"] == 0.0
    ta = cm.cell_seconds("task_arithmetic", 4, 8e9, 224, v)["merge"]
    assert cm.cell_seconds("tsv_merge", 4, 8e9, 224, v)["merge"] == pytest.approx(ta + 4 * 224 * v["svd_s_per_matrix"])
    assert cm.cell_seconds("iso_c", 4, 8e9, 224, v)["merge"] == pytest.approx(ta + 224 * v["svd_s_per_matrix"])


def test_every_input_feeds_a_column_and_nothing_is_measured_on_a_gpu_yet(cm):
    used = {n for names in cm.COLUMN_INPUTS.values() for n in names}
    assert used == set(cm.INPUTS)
    assert all(i.assumed and i.source for i in cm.INPUTS.values())
    assert all(i.assumed for i in cm.RESIDENT_RATIOS.values())  # measured on a CPU, not a GPU
    assert cm.assumed_by_column(cm.INPUTS) == cm.COLUMN_INPUTS


def test_gpu_check_makes_the_svd_time_measured(cm, tmp_path):
    args, given = cm.parse_args(["--gpu-check", str(_gpu_check_json(tmp_path))])
    inputs = cm.resolve_inputs(args, given)
    svd = inputs["svd_s_per_matrix"]
    assert (svd.value, svd.assumed) == (0.8, False)
    assert "H200" in svd.source and "4096x14336" in svd.source
    assert all("svd_s_per_matrix" not in names for names in cm.assumed_by_column(inputs).values())
    # a value given on the command line wins, and is not known to be measured
    args, given = cm.parse_args(["--gpu-check", str(_gpu_check_json(tmp_path)), "--svd-s-per-matrix", "0.1"])
    svd = cm.resolve_inputs(args, given)["svd_s_per_matrix"]
    assert (svd.value, svd.assumed) == (0.1, True)


def test_gpu_check_from_a_cpu_run_or_without_the_shape_is_refused(cm, tmp_path):
    with pytest.raises(SystemExit, match="CPU run"):
        cm.inputs_from_gpu_check(_gpu_check_json(tmp_path, device="cpu"))
    with pytest.raises(SystemExit, match="no SVD time"):
        cm.inputs_from_gpu_check(_gpu_check_json(tmp_path, shapes={"96x160": 0.001}))
    transposed = cm.inputs_from_gpu_check(_gpu_check_json(tmp_path, shapes={"14336x4096": 0.7}))
    assert transposed["svd_s_per_matrix"].value == 0.7


def test_json_output_flags_assumed_inputs(cm, capsys):
    cm.main(["--sweeps", str(REPO / "sweeps" / "paper" / "llama3.2-3b.yaml"), "--resident-ratio-model", "zoo",
             "--json"])
    out = json.loads(capsys.readouterr().out)
    total = out["total"]
    assert total["cells"] > 0
    assert total["vllm_eval_h"] < total["vllm_resident_h"] <= total["vllm_fresh_h"] < total["hf_h"]
    assert out["inputs"]["resident_ratio"] == {"value": 35.35, "assumed": True,
                                               "source": cm.RESIDENT_RATIOS["zoo"].source}
    assert "resident_ratio" in out["assumed_inputs_by_column"]["vllm_resident_h"]
