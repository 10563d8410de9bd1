"""RegMean and Fisher merging: RegMean on a linear layer is the least-squares merge on the calibration inputs
the statistics pass saw; Fisher with equal Fishers is the mean; both agree with FusionBench's formulas
(re-implemented here from its regmean.py / fisher_merging.py, MergeBench's reduce_non_diag being the same) on
random inputs; AIM on the statistics pass merges bit for bit as its version-2 in-method pass did; a sweep
computes each checkpoint's statistic once, in its store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.merge import merge_state_dict, open_inputs
from study.methods.fisher import fisher_average
from study.methods.regmean import regmean_solve
from study.methods.registry import get_method
from study.statistics import COMPUTED
from study.statistics.calibration import calibration_texts
from study.statistics.compute import load_model
from study.statistics.spec import CalibrationSpec
from study.sources import open_source


def merge(family, name: str, checkpoints: list[Path], **given) -> dict[str, torch.Tensor]:
    info = get_method(name)
    return merge_state_dict(open_inputs(family.base, checkpoints), info, info.resolve_params(given, len(checkpoints)))


# --- FusionBench's formulas, written again from its code (fusion_bench/method/regmean/regmean.py,
# --- fusion_bench/method/fisher_merging/fisher_merging.py): explicit inverse, its own diagonal reduction.

def fb_reduce_non_diagonal(g: torch.Tensor, ratio: float) -> torch.Tensor:
    keep = torch.diag(torch.ones(g.shape[0], dtype=g.dtype) - ratio)
    return g * (keep + torch.zeros_like(keep).fill_(ratio))


def fb_regmean(weights: list[torch.Tensor], grams: list[torch.Tensor], ratio: float) -> torch.Tensor:
    reduced = [fb_reduce_non_diagonal(g, ratio) for g in grams]
    products = [g @ w.T for g, w in zip(reduced, weights)]
    return (torch.inverse(sum(reduced)) @ sum(products)).T


def fb_fisher(params: list[torch.Tensor], fishers: list[torch.Tensor], coefficients: list[float], minimal: float):
    values, f = torch.stack(params), torch.stack(fishers) + minimal
    c = torch.tensor(coefficients, dtype=values.dtype).reshape(-1, *[1] * (values.dim() - 1))
    return (c * f * values).sum(0) / (c * f).sum(0)


def _random_grams(k: int, n: int, d: int, gen: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs = [torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.rand(d, generator=gen, dtype=torch.float64)
          for _ in range(k)]
    return xs, [x.T @ x / n for x in xs]


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_regmean_matches_fusionbench_formula(alpha):
    gen = torch.Generator().manual_seed(1)
    _, grams = _random_grams(3, 200, 24, gen)
    weights = [torch.randn(16, 24, generator=gen, dtype=torch.float64) for _ in range(3)]
    ours = regmean_solve(weights, grams, alpha)
    assert torch.allclose(ours, fb_regmean(weights, grams, alpha), rtol=1e-9, atol=1e-10)


def test_regmean_alpha_one_is_least_squares_and_zero_a_channel_weighted_mean():
    gen = torch.Generator().manual_seed(2)
    xs, grams = _random_grams(3, 150, 20, gen)
    weights = [torch.randn(8, 20, generator=gen, dtype=torch.float64) for _ in range(3)]
    a = torch.cat([x / x.shape[0] ** 0.5 for x in xs])
    b = torch.cat([x @ w.T / x.shape[0] ** 0.5 for x, w in zip(xs, weights)])
    assert torch.allclose(regmean_solve(weights, grams, 1.0), torch.linalg.lstsq(a, b).solution.T, atol=1e-9)
    diag = torch.stack([torch.diagonal(g) for g in grams])
    expected = (diag[:, None, :] * torch.stack(weights)).sum(0) / diag.sum(0)
    assert torch.allclose(regmean_solve(weights, grams, 0.0), expected, atol=1e-12)
    assert not torch.allclose(regmean_solve(weights, grams, 1.0), expected, atol=1e-3)


def test_fisher_matches_fusionbench_formula_and_equal_fishers_give_the_mean():
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(7, 5, generator=gen) for _ in range(4)]
    fishers = [torch.rand(7, 5, generator=gen) ** 3 for _ in range(4)]
    coefficients = [0.25, 1.0, 0.5, 2.0]
    assert torch.allclose(fisher_average(params, fishers, coefficients, 1e-6),
                          fb_fisher(params, fishers, coefficients, 1e-6), rtol=1e-6, atol=1e-7)
    same = [fishers[0]] * 4
    assert torch.allclose(fisher_average(params, same, [1.0] * 4, 1e-6), torch.stack(params).mean(0), atol=1e-6)
    zero = [torch.zeros(7, 5)] * 4
    assert torch.allclose(fisher_average(params, zero, coefficients, 1e-6), fisher_average(params, None, coefficients, 1e-6))


def _layer_inputs(family, checkpoint: Path, layer: str, texts: list[str]) -> torch.Tensor:
    base_src = open_source(family.base)
    model, tok = load_model(family.base, open_source(checkpoint, base_src), "cpu")
    seen: list[torch.Tensor] = []
    model.get_submodule(layer).register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        for t in texts:
            model(input_ids=tok(t, return_tensors="pt").input_ids)
    return torch.cat(seen).double()


def test_regmean_on_a_linear_layer_is_least_squares_on_the_calibration_inputs(llama_family, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDY_STATISTICS_DIR", str(tmp_path / "stats"))
    ckpts = llama_family.checkpoints[:3]
    merged = merge(llama_family, "regmean", ckpts, sequences=8, off_diagonal_scale=1.0)
    texts = calibration_texts(CalibrationSpec(sequences=8))
    # Well-conditioned layers (Gram condition ~1e3): the Grams are stored in float32, so a layer whose Gram
    # has condition 1e7 (this random model's o_proj) agrees only to ~1e-3 relative, as any float32 Gram would.
    for layer in ("model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        xs = [_layer_inputs(llama_family, c, layer, texts) for c in ckpts]
        ws = [open_source(c).get(f"{layer}.weight").double() for c in ckpts]
        a = torch.cat([x / x.shape[0] ** 0.5 for x in xs])
        b = torch.cat([x @ w.T / x.shape[0] ** 0.5 for x, w in zip(xs, ws)])
        expected = torch.linalg.lstsq(a, b).solution.T
        assert torch.allclose(merged[f"{layer}.weight"].double(), expected, atol=1e-6), layer
        mean = torch.stack(ws).mean(0)
        assert not torch.allclose(expected, mean, atol=1e-4), layer  # the check can tell RegMean from a mean
    mean = torch.stack([open_source(c).get("model.norm.weight") for c in ckpts]).mean(0)
    assert torch.allclose(merged["model.norm.weight"], mean, atol=1e-6)  # not a linear layer: averaged


def test_fisher_of_copies_is_the_checkpoint_and_differs_from_the_mean(llama_family, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDY_STATISTICS_DIR", str(tmp_path / "stats"))
    ckpts = llama_family.checkpoints[:2]
    copies = merge(llama_family, "fisher", [ckpts[0]] * 2, sequences=4)
    for name, t in copies.items():
        assert torch.allclose(t, open_source(ckpts[0]).get(name), atol=1e-6), name
    merged = merge(llama_family, "fisher", ckpts, sequences=4)
    mean = merge(llama_family, "linear", ckpts)
    assert any(not torch.allclose(merged[n], mean[n], atol=1e-6) for n in merged)


def _aim_v2(family, checkpoints: list[Path], calibration: str, omega: float) -> dict[str, torch.Tensor]:
    """AIM as version 2 computed it inside the method (its channel_activations), on task arithmetic."""
    model, tok = load_model(family.base, None, "cpu")
    sums, counts = {}, {}

    def record(name):
        def hook(_m, args):
            flat = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + flat.abs().sum(0)
            counts[name] = counts.get(name, 0) + flat.shape[0]
        return hook

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and "lm_head" not in name:
            m.register_forward_pre_hook(record(name))
    from study.zoo.train import torch_threads

    with torch.no_grad(), torch_threads(1):
        for text in calibration_texts(CalibrationSpec() if calibration == "zoo" else
                                      CalibrationSpec(source="file", path=calibration)):
            model(input_ids=tok(text, return_tensors="pt", truncation=True, max_length=512).input_ids)
    acts = {}
    for name, total in sums.items():
        mean = total / counts[name]
        acts[f"{name}.weight"] = mean / float(mean.max())
    from study.methods.common import task_vectors, weighted_sum

    out = {}
    base_src, sources = open_source(family.base), [open_source(c) for c in checkpoints]
    for n in base_src.names():
        base = base_src.get(n).float()
        delta = 1.0 * weighted_sum(task_vectors(base, [s.get(n).float() for s in sources]), [1.0] * len(sources))
        out[n] = base + delta * (1 - acts[n] * (1 - omega)) if n in acts else base + delta
    return out


def test_aim_on_the_statistics_pass_is_bit_identical_to_version_2(llama_family, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE_STUDY_STATISTICS_DIR", str(tmp_path / "stats"))
    text = tmp_path / "calib.txt"
    text.write_text("\n".join(f"line {i} of some calibration text" for i in range(10)))
    ckpts = llama_family.checkpoints[:2]
    for calibration in ("zoo", str(text)):
        new = merge(llama_family, "aim", ckpts, inner_method="task_arithmetic", omega=0.3, calibration=calibration)
        old = _aim_v2(llama_family, ckpts, calibration, 0.3)
        for name in new:
            assert torch.equal(new[name], old[name]), (calibration, name)


@pytest.mark.parametrize("method", ["regmean", "fisher"])
def test_a_sweep_computes_each_checkpoint_statistic_once_in_its_store(method, tmp_path):
    from study.config import parse_sweep
    from study.prepare import prepare
    from study.runner import CellRunner
    from study.store import Store

    sweep = {"name": "stats", "bases": [{"name": "zoo", "model": "zoo:base",
                                         "checkpoints": ["zoo:add", "zoo:sub", "zoo:first"]}],
             "methods": [{"name": method, "params": {"sequences": 8}}], "ks": [2, 3], "subsets": {"per_k": 3},
             "evaluation": {"tasks": ["zoo:add"], "limit": 2}}
    ctx = prepare(parse_sweep(sweep))
    cells = [c for c in ctx.plan.cells if c.method == method]
    assert len(cells) == 4
    runner = CellRunner(ctx, Store(tmp_path / "store"))
    before = len(COMPUTED)
    for cell in cells:
        runner.weights(cell)
    assert len(COMPUTED) - before == 3  # one per checkpoint, though 4 cells merged 9 checkpoint slots
    assert len(list((tmp_path / "store" / "statistics").glob("*/*.safetensors"))) == 3


def test_a_plugin_declares_statistics_like_a_builtin(llama_family, tmp_path, monkeypatch):
    """The example of docs/methods.md, as written there: equal to fisher's formula on task vectors."""
    from study.methods.registry import merge_method
    from study.statistics import StatisticRequest, parse_calibration

    def needs(params):
        return [StatisticRequest(statistic="fisher_diag", calibration=parse_calibration(params["calibration"]))]

    @merge_method("fisher_task_arithmetic", statistics=needs,
                  ranges={"calibration": {"help": "zoo, lm_eval:<task>[:split] or a text file"}},
                  mergekit_note="not in mergekit")
    def fisher_task_arithmetic(base, tensors, *, calibration: str = "zoo", tensor_name=None, context=None):
        """Task vectors averaged with Fisher weights."""
        fishers = context["statistics"].checkpoints("fisher_diag", tensor_name)  # None: no Fisher for this tensor
        if fishers is None:
            return sum(tensors) / len(tensors)
        total = sum(fishers) + 1e-6
        return base + sum(f * (t - base) for f, t in zip(fishers, tensors)) / total

    monkeypatch.setenv("MERGE_STUDY_STATISTICS_DIR", str(tmp_path / "stats"))
    text = tmp_path / "calib.txt"
    text.write_text("a plugin's calibration text\nand a second line\n")
    ckpts = llama_family.checkpoints[:2]
    info = fisher_task_arithmetic.__merge_method__
    before = len(COMPUTED)
    plugin = merge_state_dict(open_inputs(llama_family.base, ckpts), info, info.resolve_params({"calibration": str(text)}, 2))
    merge(llama_family, "fisher", ckpts, calibration=str(text))
    assert len(COMPUTED) - before == 2  # the built-in reused the plugin's statistics
    from study.statistics import gather

    stats = gather(open_inputs(llama_family.base, ckpts), needs({"calibration": str(text)}), tmp_path / "stats")
    name = "model.layers.0.mlp.up_proj.weight"
    f = stats.checkpoints("fisher_diag", name)
    base, tensors = open_source(llama_family.base).get(name), [open_source(c).get(name) for c in ckpts]
    expected = base + (f[0] * (tensors[0] - base) + f[1] * (tensors[1] - base)) / (f[0] + f[1] + 1e-6)
    assert torch.allclose(plugin[name], expected, atol=1e-6)
    assert not torch.allclose(plugin[name], (tensors[0] + tensors[1]) / 2, atol=1e-5)
