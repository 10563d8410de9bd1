"""bench/cost_model.py: the resident-engine rule, the assumed/measured flags, a GPU check's measured input, and the
scoring workload derived from a sweep's tasks (groups and tags expanded to their leaves by lm-eval's own index)."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

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


TINY_TASKS = {
    # a group of three leaves: a literal choice list, a Jinja list literal, a template over the document's data
    "_tiny_group.yaml": """
        group: tiny_group
        task: [tiny_a, tiny_b, tiny_c]
        aggregate_metric_list: [{metric: acc, weight_by_size: true}]
    """,
    "tiny_a.yaml": "task: tiny_a\ndataset_path: x\noutput_type: multiple_choice\ndoc_to_choice: [A, B, C, D, E]\n",
    "tiny_b.yaml": "task: tiny_b\ndataset_path: x\noutput_type: multiple_choice\ndoc_to_choice: '{{[sol1, sol2]}}'\n",
    "tiny_c.yaml": "task: tiny_c\ndataset_path: x\noutput_type: multiple_choice\ndoc_to_choice: '{{choices.text}}'\n",
    # a tag of two leaves (as headqa), and a task without output_type (lm-eval's default: it generates)
    "tiny_t1.yaml": "task: tiny_t1\ntag: tiny_tag\ndataset_path: x\noutput_type: loglikelihood\n",
    "tiny_t2.yaml": "task: tiny_t2\ntag: tiny_tag\ndataset_path: x\noutput_type: loglikelihood\n",
    "tiny_gen.yaml": "task: tiny_gen\ndataset_path: x\n",
}


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    """lm-eval's own index (TaskManager) of a few task YAMLs, without its built-in tasks: fast and offline."""
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("tiny_tasks")
    for name, text in TINY_TASKS.items():
        (root / name).write_text(textwrap.dedent(text))
    return dict(TaskManager(include_defaults=False, include_path=str(root)).task_index)


def _values(cm, **over):
    """Input values plus one cell's workload tokens (``sweep_row`` adds them from the sweep's tasks)."""
    cell = {"mc_tokens": 4.5e6, "gen_prompt_tokens": 4.5e5, "gen_tokens": 1.28e5}
    return {**{n: i.value for n, i in cm.INPUTS.items()}, **cell, **over}


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


def test_json_output_flags_assumed_inputs(cm, capsys, monkeypatch):
    mc = SimpleNamespace(kind=SimpleNamespace(name="TASK"), yaml_path=None, tags=set(),
                         cfg={"output_type": "multiple_choice", "doc_to_choice": "{{choices}}"})
    monkeypatch.setattr(cm, "task_index", lambda: _AnyName(mc))
    cm.main(["--sweeps", str(REPO / "sweeps" / "paper" / "llama3.2-3b.yaml"), "--resident-ratio-model", "zoo",
             "--json"])
    out = json.loads(capsys.readouterr().out)
    total = out["total"]
    assert total["cells"] > 0
    assert total["vllm_eval_h"] < total["vllm_resident_h"] <= total["vllm_fresh_h"] < total["hf_h"]
    assert out["inputs"]["resident_ratio"] == {"value": 35.35, "assumed": True, "used": True,
                                               "source": cm.RESIDENT_RATIOS["zoo"].source}
    assert "resident_ratio" in out["assumed_inputs_by_column"]["vllm_resident_h"]
    w = out["workload"]["llama3.2-3b"]
    assert (w["leaves"], w["docs"], w["gen_docs"]) == (16, 16 * 500, 0)
    assert w["mc_requests"] == 16 * 500 * cm.INPUTS["choices_per_doc"].value
    assert cm.DOCS_FLAG in w["flags"]
    assert out["inputs"]["gen_tokens_per_doc"]["used"] is False  # no generation task
    assert "gen_tokens_per_doc" not in out["assumed_inputs_by_column"]["vllm_resident_h"]
    assert "choices_per_doc" in out["assumed_inputs_by_column"]["vllm_resident_h"]


class _AnyName(dict):
    """An index in which every name is the same task entry."""

    def __init__(self, entry):
        super().__init__()
        self.entry = entry

    def get(self, name, default=None):
        return self.entry

    def __contains__(self, name):
        return True

    def __getitem__(self, name):
        return self.entry


def test_a_group_and_a_tag_count_their_leaves(cm, tiny_index):
    v = _values(cm, choices_per_doc=3.0, tokens_per_request=100.0)
    w = cm.workload(["tiny_group", "tiny_tag", "tiny_gen"], 7, tiny_index, v)
    assert [(x.name, x.benchmark) for x in w.leaves] == [
        ("tiny_a", "tiny_group"), ("tiny_b", "tiny_group"), ("tiny_c", "tiny_group"),
        ("tiny_t1", "tiny_tag"), ("tiny_t2", "tiny_tag"), ("tiny_gen", "tiny_gen")]
    assert [x.choices for x in w.leaves[:3]] == [5, 2, None]  # read from the YAML where it is literal
    assert all(x.docs == 7 for x in w.leaves) and cm.DOCS_FLAG in w.flags
    assert w.mc_requests == 7 * (5 + 2 + 3) + 7 * 2  # docs x choices (assumed 3 for tiny_c) + loglikelihood docs
    assert w.mc_tokens == w.mc_requests * 100
    assert (w.gen_docs, w.gen_tokens) == (7, 7 * v["gen_tokens_per_doc"])
    summary = cm.workload_summary(w)
    assert (summary["benchmarks"], summary["leaves"]) == (3, 6)
    assert summary["groups"] == {"tiny_group": 3, "tiny_tag": 2}
    assert summary["choices_assumed_leaves"] == ["tiny_c"]
    # no generation leaf and no unreadable choice list: those inputs are not rested on
    assert cm.workload(["tiny_a", "tiny_t1"], 7, tiny_index, v).uses == {"tokens_per_request"}


def test_workload_refuses_what_it_cannot_count_offline(cm, tiny_index):
    with pytest.raises(SystemExit, match="not in lm-eval's task index"):
        cm.workload(["no_such_task"], 10, tiny_index, _values(cm))
    with pytest.raises(SystemExit, match="limit is null"):
        cm.workload(["tiny_a"], None, tiny_index, _values(cm))


def test_literal_choices(cm):
    assert cm.literal_choices(["no", "yes"]) == 2
    assert cm.literal_choices("{{[A, B, C, D]}}") == 4
    assert cm.literal_choices("{{choices.text}}") is None
    assert cm.literal_choices("{{answers|map(attribute='atext')|list}}") is None
    assert cm.literal_choices("/path/utils.doc_to_choice") is None


@pytest.mark.slow
def test_paper_sweep_expands_with_the_installed_lm_eval(cm):
    w = cm.sweep_workload(REPO / "sweeps" / "paper" / "llama3.2-3b.yaml", cm.task_index(), _values(cm))
    summary = cm.workload_summary(w)
    assert summary["groups"] == {"headqa": 2, "leaderboard_bbh": 24, "leaderboard_gpqa": 3, "mmlu": 57}
    assert (summary["benchmarks"], summary["leaves"], summary["gen_docs"]) == (16, 98, 0)
