"""Fusion methods: every registered one yields distributions; MinCE picks the lowest-CE teacher per token;
the registry lists, validates, describes and takes plugins from its own entry-point group."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from study.errors import MethodError  # noqa: E402
from study.fusion.registry import FUSION_METHODS, fusion_names, get_fusion_method  # noqa: E402

K_TEACHERS, N, TOP, VOCAB = 3, 40, 5, 30


def teachers(seed: int = 0, scale: list[float] | None = None):
    """k teachers' top-K over a vocabulary of VOCAB at N positions, with gold tokens and their CE."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(K_TEACHERS, N, VOCAB, generator=g) * 3
    if scale is not None:
        logits = logits * torch.tensor(scale)[:, None, None]
    logp = torch.log_softmax(logits, -1)
    top = logp.topk(TOP, dim=-1)
    gold = torch.randint(0, VOCAB, (N,), generator=g)
    gold_ce = -logp.gather(-1, gold.expand(K_TEACHERS, N)[..., None])[..., 0]
    return top.values, top.indices, gold_ce


@pytest.mark.parametrize("name", fusion_names())
def test_every_method_returns_distributions_over_the_teachers_ids(name):
    info = get_fusion_method(name)
    logprobs, ids, gold_ce = teachers()
    out_ids, probs = info.fn(logprobs, ids, gold_ce, **info.method_kwargs(info.resolve_params({})))
    assert out_ids.shape == probs.shape and out_ids.shape[0] == N
    torch.testing.assert_close(probs.sum(-1), torch.ones(N), atol=1e-5, rtol=0)
    assert (probs >= 0).all()
    for row in range(N):
        offered = set(ids[:, row].flatten().tolist())
        assert set(out_ids[row][probs[row] > 0].tolist()) <= offered
        kept = out_ids[row][probs[row] > 0].tolist()
        assert len(kept) == len(set(kept)), "an id appears twice in a fused row"


def test_min_ce_takes_the_lowest_cross_entropy_teacher_at_each_token():
    logprobs, ids, gold_ce = teachers(1)
    gold_ce[2, :10] = -1.0  # teacher 2 is best on the first ten tokens, teacher 0 on the rest
    gold_ce[0, 10:] = -1.0
    out_ids, probs = get_fusion_method("min_ce").fn(logprobs, ids, gold_ce)
    for row in range(N):
        best = 2 if row < 10 else 0
        expected = dict(zip(ids[best, row].tolist(), torch.softmax(logprobs[best, row], -1).tolist()))
        got = {i: p for i, p in zip(out_ids[row].tolist(), probs[row].tolist()) if p > 0}
        assert got.keys() == expected.keys()
        for i, p in expected.items():
            assert got[i] == pytest.approx(p, abs=1e-6)


def test_min_ce_follows_gold_ce_not_the_teacher_order():
    logprobs, ids, gold_ce = teachers(2)
    choice = gold_ce.argmin(0)
    out_ids, _ = get_fusion_method("min_ce").fn(logprobs, ids, gold_ce)
    top1 = ids[choice, torch.arange(N), logprobs[choice, torch.arange(N)].argmax(-1)]
    assert torch.equal(out_ids[:, 0], top1)


def test_avg_is_the_mean_of_the_renormalised_teachers():
    logprobs, ids, gold_ce = teachers(3)
    out_ids, probs = get_fusion_method("avg").fn(logprobs, ids, gold_ce)
    dense = torch.zeros(N, VOCAB)
    for t in range(K_TEACHERS):
        dense.scatter_add_(1, ids[t], torch.softmax(logprobs[t], -1) / K_TEACHERS)
    got = torch.zeros(N, VOCAB).scatter_add_(1, out_ids, probs)
    torch.testing.assert_close(got, dense, atol=1e-6, rtol=0)


def test_infifusion_standardises_each_teachers_scale_away():
    """A teacher whose logits are scaled (more or less confident, same ranking) fuses to the same distribution:
    that is what InfiFusion's logits standardisation is for; the plain average does change."""
    fn = get_fusion_method("infifusion_topk").fn
    plain_ids, plain = fn(*teachers(4))
    scaled_ids, scaled = fn(*teachers(4, scale=[0.3, 1.0, 4.0]))
    assert torch.equal(plain_ids, scaled_ids)
    torch.testing.assert_close(plain, scaled, atol=1e-5, rtol=0)
    avg = get_fusion_method("avg").fn
    assert not torch.allclose(avg(*teachers(4))[1], avg(*teachers(4, scale=[0.3, 1.0, 4.0]))[1], atol=1e-3)
    assert plain.shape[-1] == TOP


def test_parameters_are_validated_and_every_one_has_help():
    info = get_fusion_method("infifusion_topk")
    resolved = info.resolve_params({"steps": 7, "lambda": 0.25, "temperature": 2})
    assert resolved["steps"] == 7 and resolved["lambda"] == 0.25 and resolved["temperature"] == 2.0
    assert resolved == info.resolve_params({**resolved})  # defaults written out give the same resolution
    with pytest.raises(MethodError, match="did you mean 'temperature'"):
        info.resolve_params({"temprature": 1.0})
    with pytest.raises(MethodError, match="lambda"):
        info.resolve_params({"lambda": 1.5})
    with pytest.raises(MethodError, match="temperature"):
        info.resolve_params({"temperature": 0})
    for name in fusion_names():
        m = get_fusion_method(name)
        assert m.version >= 1 and m.reference and m.summary
        assert all(p.help for p in m.params), f"{name}: a parameter without help"


def test_unknown_fusion_method_suggests_a_name():
    with pytest.raises(MethodError, match="did you mean 'min_ce'"):
        get_fusion_method("min_cee")


def _plugin(tmp_path, name: str, target: str):
    """A package registered only through a ``study.fusion_methods`` entry point (a dist-info on sys.path)."""
    pkg = tmp_path / "fusion_plugin_example.py"
    pkg.write_text(
        "from study.fusion.schema import fusion_method\n"
        "from study.fusion.fuse import sparse_union\n\n"
        f"@fusion_method({name!r}, reference='test plugin', ranges={{'weight': {{'help': 'teacher 0 weight'}}}})\n"
        "def first_teacher(logprobs, ids, gold_ce, *, weight: float = 1.0):\n"
        "    \"\"\"Teacher 0 only.\"\"\"\n"
        "    import torch\n"
        "    return sparse_union(ids[0], torch.softmax(logprobs[0], -1))\n")
    dist = tmp_path / "fusion_plugin_example-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fusion-plugin-example\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[study.fusion_methods]\n{name} = {target}\n")
    return tmp_path


def test_a_plugin_from_the_entry_point_group_is_listed_and_runs(tmp_path, monkeypatch):
    site = _plugin(tmp_path, "first_teacher", "fusion_plugin_example:first_teacher")
    monkeypatch.syspath_prepend(str(site))
    FUSION_METHODS.refresh()
    try:
        assert "first_teacher" in fusion_names()
        info = get_fusion_method("first_teacher")
        assert info.resolve_params({"weight": 2})["weight"] == 2.0
        ids, probs = info.fn(*teachers())
        torch.testing.assert_close(probs.sum(-1), torch.ones(N))
    finally:
        monkeypatch.undo()
        FUSION_METHODS.refresh()
    assert "first_teacher" not in fusion_names()


def test_a_plugin_reusing_a_builtin_name_is_an_error_naming_both(tmp_path, monkeypatch):
    from study.errors import UserError

    site = _plugin(tmp_path, "min_ce", "fusion_plugin_example:first_teacher")
    monkeypatch.syspath_prepend(str(site))
    FUSION_METHODS.refresh()
    try:
        with pytest.raises(UserError, match="min_ce.*study.fusion.fuse:min_ce.*fusion_plugin_example"):
            fusion_names()
    finally:
        monkeypatch.undo()
        FUSION_METHODS.refresh()


def test_merge_study_methods_lists_fusion_methods_under_their_own_heading():
    run = [sys.executable, "-m", "study", "methods"]
    text = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    head, _, fusion = text.partition("Fusion methods")
    assert fusion and "min_ce  (v1)" in fusion and "infifusion_topk" in fusion and "lambda: float = 0.5" in fusion
    assert "min_ce" not in head
    listed = json.loads(subprocess.run(run + ["--json"], capture_output=True, text=True, check=True).stdout)
    kinds = {m["name"]: m.get("kind") for m in listed}
    assert kinds["fusion:min_ce"] == "fusion" and kinds["ties"] is None
