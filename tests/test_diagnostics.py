"""Interference diagnostics (``study.diagnostics``): each quantity on hand-made tensors with a known answer, the
record round trip, the driver's hook on both merge paths, and the sweep switch."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from study.diagnostics import EXACT_ENTRIES, RANK, Diagnostics, DiagnosticsAccumulator, layer_of, module_of, pairs

Q = "model.layers.{}.self_attn.q_proj.weight"
NORM = "model.layers.{}.input_layernorm.weight"


def _run(tensors: dict[str, tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]]) -> Diagnostics:
    k = len(next(iter(tensors.values()))[1])
    acc = DiagnosticsAccumulator(k)
    for name, (base, inputs, merged) in tensors.items():
        acc.add(name, base, inputs, merged)
    return acc.result()


def _ta(base: torch.Tensor, deltas: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    return base, [base + d for d in deltas], base + sum(deltas)


def test_names_give_layer_and_module_type():
    assert layer_of(Q.format(3)) == 3 and layer_of("model.embed_tokens.weight") is None
    assert module_of(Q.format(0)) == "q_proj" and module_of("model.norm.weight") == "norm"
    assert module_of("model.layers.0.self_attn.q_proj.bias") == "q_proj.bias"
    assert pairs(3) == [(0, 1), (0, 2), (1, 2)]


def test_cosines_overall_per_module_and_per_layer():
    base = torch.zeros(4)
    # layer 0 norm: parallel; layer 1 norm: orthogonal; equal norms, so the model-wide cosine is their mean
    d = _run({NORM.format(0): _ta(base, [torch.tensor([1.0, 0, 0, 0]), torch.tensor([2.0, 0, 0, 0])]),
              NORM.format(1): _ta(base, [torch.tensor([0, 1.0, 0, 0]), torch.tensor([0, 0, 2.0, 0])])})
    assert d.layers[0].cosine == [pytest.approx(1.0)] and d.layers[1].cosine == [pytest.approx(0.0)]
    # <t1,t2> = 2, |t1|^2 = 2, |t2|^2 = 8: cos = 2 / 4
    assert d.overall.cosine == [pytest.approx(0.5)]
    assert d.modules["input_layernorm"].cosine == [pytest.approx(0.5)]
    assert d.overall.norm_tasks == [pytest.approx(math.sqrt(2)), pytest.approx(math.sqrt(8))]
    assert d.tensors.cosine_mean == [pytest.approx(1.0), pytest.approx(0.0)]
    assert not d.sampled


def test_three_checkpoints_give_every_pair_in_order():
    e = torch.eye(3)
    d = _run({NORM.format(0): _ta(torch.zeros(3), [e[0], e[0] + e[1], -e[0]])})
    s2 = 1 / math.sqrt(2)
    assert d.overall.cosine == [pytest.approx(s2), pytest.approx(-1.0), pytest.approx(-s2)]
    assert d.scalars()["cosine_min"] == pytest.approx(-1.0)


def test_sign_conflict_rate_among_the_top_fifth():
    # 10 entries: top 20% = 2 per task vector. Both are top at entries 0 and 1; they disagree at entry 1 only.
    t1 = torch.tensor([10.0, 9, 1, 1, 1, 1, 1, 1, 1, 1])
    t2 = torch.tensor([10.0, -9, 1, 1, 1, 1, 1, 1, 1, 1])
    d = _run({NORM.format(0): _ta(torch.zeros(10), [t1, t2])})
    assert d.overall.sign_conflict == pytest.approx(0.5)
    # no entry top for both: the rate is undefined, not 0
    t3 = torch.tensor([0.0, 0, 5, 6, 0, 0, 0, 0, 0, 0])
    d = _run({NORM.format(0): _ta(torch.zeros(10), [t1, t3])})
    assert d.overall.sign_conflict is None


def test_sign_conflict_with_three_checkpoints_counts_an_entry_once():
    # entries 0, 1 top for all three; entry 0 all positive, entry 1 mixed: 1 conflict of 2
    t = [torch.tensor([10.0, 9, 0, 0, 0, 0, 0, 0, 0, 0]), torch.tensor([10.0, 9, 0, 0, 0, 0, 0, 0, 0, 0]),
         torch.tensor([10.0, -9, 0, 0, 0, 0, 0, 0, 0, 0])]
    d = _run({NORM.format(0): _ta(torch.zeros(10), t)})
    assert d.overall.sign_conflict == pytest.approx(0.5)


def _rank_r(rows: int, cols: int, basis: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, basis.shape[0], generator=g) @ basis


def test_subspace_overlap_identical_orthogonal_and_half():
    assert RANK == 4
    rows, cols = 24, 40
    e = torch.eye(cols)
    base = torch.randn(rows, cols, generator=torch.Generator().manual_seed(0))

    def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
        return _run({Q.format(0): _ta(base, [a, b])}).overall.subspace_overlap[0]

    a = _rank_r(rows, cols, e[:4], 1)
    assert overlap(a, 3 * _rank_r(rows, cols, e[:4], 2)) == pytest.approx(1.0, abs=1e-5)  # same row space
    assert overlap(a, _rank_r(rows, cols, e[4:8], 3)) == pytest.approx(0.0, abs=1e-6)  # orthogonal
    # rank 2 each, one shared direction: ||V1^T V2||^2 / 2 = 1 / 2
    assert overlap(_rank_r(rows, cols, e[[0, 1]], 4), _rank_r(rows, cols, e[[0, 2]], 5)) == pytest.approx(0.5, abs=1e-5)
    full = torch.randn(rows, cols, generator=torch.Generator().manual_seed(6))
    assert overlap(full, -2 * full) == pytest.approx(1.0, abs=1e-5)  # rank > r: the same top-4 estimate


def test_effective_rank_is_the_participation_ratio():
    base = torch.zeros(16, 16)
    diag = torch.diag(torch.tensor([2.0, 1.0] + [0.0] * 14))
    four = torch.diag(torch.tensor([1.0] * 4 + [0.0] * 12))
    d = _run({Q.format(0): (base, [base + diag, base + four], base + diag)})
    assert d.tensors.effective_rank_merged == [pytest.approx(25 / 17)]  # (4 + 1)^2 / (16 + 1)
    assert d.tensors.effective_rank_tasks == [pytest.approx((25 / 17 + 4) / 2)]
    assert d.overall.rank_ratio == pytest.approx((25 / 17) / ((25 / 17 + 4) / 2))


def test_norm_ratio_of_a_sum_of_orthogonal_task_vectors():
    e = torch.eye(4)
    d = _run({NORM.format(0): _ta(torch.zeros(4), [e[0], e[1]])})
    assert d.overall.norm_ratio == pytest.approx(1 / math.sqrt(2))
    d = _run({NORM.format(0): (torch.zeros(4), [e[0], e[1]], torch.zeros(4))})
    assert d.overall.norm_ratio == 0.0


def test_a_large_tensor_is_sampled_and_its_sums_are_scaled_to_the_whole():
    rows, cols = 2 * EXACT_ENTRIES // 64, 64
    base = torch.zeros(rows, cols)
    d = _run({Q.format(0): (base, [base + 0.5, base - 0.25], base)})
    assert d.sampled and d.overall.sampled_entries < d.overall.entries == rows * cols
    assert d.overall.norm_tasks == [pytest.approx(0.5 * math.sqrt(rows * cols)), pytest.approx(0.25 * math.sqrt(rows * cols))]
    assert d.overall.cosine == [pytest.approx(-1.0)]


def test_k_inputs_are_checked():
    acc = DiagnosticsAccumulator(2)
    with pytest.raises(ValueError, match="k = 2"):
        acc.add("x", torch.zeros(3), [torch.zeros(3)], torch.zeros(3))


def _record(diagnostics: Diagnostics | None):
    from study.plan import Cell
    from study.record import Outcome, Record

    cell = Cell("c1", "b", "task_arithmetic", {}, {"lambda": 1.0}, 2, 0, ("a", "b"))
    return Record.new(cell, Outcome.DONE, worker="w", scores={"t": {"metric": "acc", "score": 0.5}},
                      diagnostics=diagnostics)


def test_record_round_trip_and_records_without_diagnostics_still_load():
    from study.record import Record, checksum

    d = _run({Q.format(0): _ta(torch.randn(12, 8), [torch.randn(12, 8), torch.randn(12, 8)]),
              NORM.format(0): _ta(torch.zeros(8), [torch.randn(8), torch.randn(8)])})
    rec = _record(d)
    back = Record.from_bytes(rec.to_bytes())
    assert back == rec and back.diagnostics == d and back.diagnostics.layers[0].tensors == 2
    old = json.loads(_record(None).to_bytes())
    del old["diagnostics"]  # a record written before the field existed
    old["checksum"] = checksum(old)
    assert Record.from_json(old).diagnostics is None


def _zoo_inputs(zoo, names: list[str]):
    from study.merge import open_inputs

    return open_inputs(zoo.model("base"), [zoo.model(n) for n in names])


@pytest.mark.parametrize("method", ["task_arithmetic", "linear"])
def test_diagnostics_are_identical_whether_the_merge_runs_block_wise_or_whole(built_zoo, method):
    from study.merge import iter_merge
    from study.methods.registry import get_method

    info = get_method(method)
    assert info.elementwise, "the test needs a method the driver runs block-wise on the CPU"
    params = info.resolve_params({}, n_models=3)
    results, merged = [], []
    for variant in (info, dataclasses.replace(info, elementwise=False)):
        acc = DiagnosticsAccumulator(3)
        merged.append(dict(iter_merge(_zoo_inputs(built_zoo, ["add", "sub", "capital"]), variant, params, observe=acc)))
        results.append(acc.result())
    assert all(torch.equal(merged[0][n], merged[1][n]) for n in merged[0])
    assert results[0] == results[1]
    d = results[0]
    assert not d.sampled and d.overall.tensors == len(d.tensors.name) == len(merged[0])
    assert d.overall.subspace_overlap is not None and len(d.overall.cosine) == 3
    assert {"q_proj", "down_proj", "embed_tokens"} <= set(d.modules) and set(d.layers) == set(range(len(d.layers)))


def test_a_run_stores_diagnostics_with_merge_cells_only(rel_family, rel_tasks, tmp_path):
    from fixtures.reliability import invoke, store_records, sweep_data, write_sweep

    sweep = write_sweep(tmp_path / "s.yaml", sweep_data(rel_family, rel_tasks, ks=[2]))
    res = invoke("run", str(sweep), "--store", str(tmp_path / "store"))
    assert res.exit_code == 0, res.stdout + res.stderr
    records = store_records(tmp_path / "store")
    assert len(records) == 7
    for cid, rec in records.items():
        merge = rec["cell"]["method"] == "task_arithmetic"
        assert (rec["diagnostics"] is not None) == merge, cid
        if merge:
            d = Diagnostics.model_validate(rec["diagnostics"])
            assert d.k == 2 and d.overall.tensors == len(d.tensors.name) > 0


def test_the_switch_is_in_no_cell_key_and_turns_the_accumulator_off():
    import types
    from pathlib import Path

    from study.checkpoints import ResolvedModel
    from study.config import ModelRef, parse_sweep
    from study.plan import build_plan
    from study.runner import CellRunner

    plans = {}
    for flag in (True, False):
        sweep = parse_sweep({"name": "s", "bases": [{"name": "b", "model": "base", "checkpoints": ["x", "y", "z"]}],
                             "methods": [{"name": "ties"}], "ks": [1, 2], "evaluation": {"tasks": ["t"]},
                             **({} if flag else {"diagnostics": False})})
        assert sweep.diagnostics is flag
        models = {m: ResolvedModel(ModelRef(model=m), Path("/nonexistent") / m, f"id:{m}") for m in "base x y z".split()}
        plans[flag] = build_plan(sweep, models, check_applicability=False)
    assert [c.cell_id for c in plans[True].cells] == [c.cell_id for c in plans[False].cells]
    for flag, plan in plans.items():
        runner = CellRunner(types.SimpleNamespace(sweep=plan.sweep), store=None)
        for cell in plan.cells:
            acc = runner.diagnostics(cell)
            assert (acc is not None) == (flag and cell.kind == "merge"), (flag, cell.method)
            assert acc is None or acc.k == len(cell.checkpoints)


def test_spearman_and_its_interval():
    from study.analysis.diagnostics_figures import spearman, spearman_ci

    x = [0.1, 0.4, 0.2, 0.9, 0.5]
    assert spearman(x, [1, 4, 2, 9, 5]) == pytest.approx(1.0)
    assert spearman(x, [-1, -4, -2, -9, -5]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    y = [0.3, 0.1, 0.5, 0.6, 0.2, 0.9, 0.4]
    xs = [0.2, 0.3, 0.1, 0.8, 0.4, 0.7, 0.9]
    lo, hi = spearman_ci(xs, y, seed=3)
    assert lo <= spearman(xs, y) <= hi and (lo, hi) == spearman_ci(xs, y, seed=3)


def _fake_cells(bases: list[str]):
    """A diagnostics table and records as the report reads them: 2 series x k = 2, 3 x 5 subsets per base."""
    import types

    import pandas as pd

    rows, records = [], {}
    g = torch.Generator().manual_seed(0)
    for base in bases:
        for method, params in (("task_arithmetic", '{"lambda": "1/k"}'), ("ties", '{"density": 0.2}')):
            for k in (2, 3):
                for sid in range(5):
                    acc = DiagnosticsAccumulator(k)
                    for layer in range(3):
                        for name, shape in ((Q.format(layer), (16, 12)), (NORM.format(layer), (12,))):
                            b = torch.randn(shape, generator=g)
                            ins = [b + torch.randn(shape, generator=g) for _ in range(k)]
                            acc.add(name, b, ins, b + sum(x - b for x in ins) / k)
                    d = acc.result()
                    cid = f"{base}-{method}-{k}-{sid}"
                    records[cid] = types.SimpleNamespace(diagnostics=d)
                    rows.append({"cell_id": cid, "base": base, "method": method, "params": params, "k": k,
                                 "subset_id": sid, "checkpoints": "[]", "counted": True,
                                 "gain": float(torch.randn(1, generator=g)), **d.scalars(), "sampled": d.sampled})
    return pd.DataFrame(rows), records


def test_diagnostics_figures_have_their_panels_and_leave_most_of_the_area_to_them():
    import matplotlib.pyplot as plt

    from study.analysis.diagnostics_figures import SHOWN, gain_figure, layer_figure, spearman_table
    from study.analysis.layout import plot_area_fraction
    from study.analysis.style import apply_theme

    apply_theme()
    bases = ["llama", "qwen"]
    table, records = _fake_cells(bases)
    rhos = spearman_table(table, sweep_seed=0)
    assert len(rhos) == len(bases) * 2 * len(SHOWN) and (rhos.n == 10).all()
    assert rhos.rho.between(-1, 1).all() and (rhos.ci_low <= rhos.ci_high).all()
    gain = gain_figure(table, rhos, {})
    assert len([a for a in gain.axes if not hasattr(a, "_colorbar")]) == 2 * len(bases) * len(SHOWN)
    assert plot_area_fraction(gain) >= 0.6
    layers = layer_figure(records, table, {})
    panels = [a for a in layers.axes if not hasattr(a, "_colorbar")]
    assert len(panels) == 5 * len(bases) and plot_area_fraction(layers) >= 0.6
    assert panels[0].get_images()[0].get_array().shape == (2, 3)  # (q_proj, input_layernorm) x 3 layers
    plt.close("all")


def test_module_docstring_documents_every_diagnostics_column():
    import study.analysis.diagnostics_figures as module

    for column in module.DIAGNOSTIC_COLUMNS:
        assert f"``{column}``" in module.__doc__, column


def test_a_long_vector_is_sampled_in_rows_too():
    n = 4 * EXACT_ENTRIES + 256
    d = _run({"model.layers.0.mlp.bias": _ta(torch.zeros(n), [torch.ones(n), -torch.ones(n)])})
    assert d.sampled and d.overall.sampled_entries <= 2 * 4096
    assert d.overall.cosine == [pytest.approx(-1.0)] and d.overall.norm_tasks[0] == pytest.approx(math.sqrt(n))


def test_the_report_part_writes_its_tables_figures_and_a_numbered_section(tmp_path):
    import types

    import pandas as pd

    from study.analysis.diagnostics_figures import add_diagnostics
    from study.plan import Cell

    table, records = _fake_cells(["zoo"])
    cells = [Cell(r.cell_id, r.base, r.method, json.loads(r.params), {}, r.k, r.subset_id, tuple("ab"))
             for r in table.itertuples()]
    ctx = types.SimpleNamespace(plan=types.SimpleNamespace(cells=cells), sweep=types.SimpleNamespace(seed=0))
    per_subset = table.assign(params=[c.params_key for c in cells])[["cell_id", "params", "counted", "gain"]]
    md = "# r\n\n## Summary per (base, method, k)\n\ntable\n"
    out, written = add_diagnostics(md, ctx, records, per_subset, {}, tmp_path, first_figure=8)
    assert out.index("## Interference diagnostics") < out.index("## Summary per")
    assert "Figure 8. Gain over the base" in out and "Figure 9. Per-layer map" in out
    assert "20 of 20 merge cells carry them" in out
    assert {p.name for p in written} >= {"diagnostics.csv", "diagnostics_spearman.csv", "diagnostics_gain.png",
                                         "diagnostics_layers.svg"}
    csv = pd.read_csv(tmp_path / "diagnostics.csv")
    assert len(csv) == 20 and csv.cosine_mean.between(-1, 1).all() and not csv.sampled.any()
    assert "different diagnostics versions" not in out
    first = cells[0].cell_id
    records[first] = types.SimpleNamespace(diagnostics=records[first].diagnostics.model_copy(update={"version": 1}))
    (tmp_path / "mixed").mkdir()
    out, _ = add_diagnostics(md, ctx, records, per_subset, {}, tmp_path / "mixed", first_figure=8)
    assert "different diagnostics versions ([1, 2])" in out
