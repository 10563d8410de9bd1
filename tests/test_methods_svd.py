"""The subspace methods against plain float64 NumPy transcriptions of methods.md's formulas, on random
matrices, plus their invariants (TSV-M at T = 1 is the identity on τ₁; Iso-C flattens the spectrum and keeps
the nuclear norm; boosting never lowers a singular value and leaves non-projection tensors alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from study.methods.iso_c import iso_c
from study.methods.iso_cts import iso_cts
from study.methods.subspace_boosting import subspace_boosting
from study.methods.tsv_merge import tsv_merge

PROJ = "model.layers.0.self_attn.q_proj.weight"
NORM = "model.layers.0.input_layernorm.weight"
EMBED = "model.embed_tokens.weight"
SHAPES = [(24, 40), (40, 24), (32, 32)]


def random_case(shape, t, seed=0):
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen)
    taus = [torch.randn(shape, generator=gen) * (0.1 * (i + 1)) for i in range(t)]
    return base, [base + tau for tau in taus], [tau.double().numpy() for tau in taus]


def _orth(m):
    p, _, qt = np.linalg.svd(m, full_matrices=False)
    return p @ qt


def dense_tsv(taus):
    rows, cols = taus[0].shape
    r = min(rows, cols)
    b = r // len(taus)
    u, s, vt = np.zeros((rows, r)), np.zeros(r), np.zeros((r, cols))
    for i, tau in enumerate(taus):
        ui, si, vti = np.linalg.svd(tau, full_matrices=False)
        u[:, i * b:(i + 1) * b], s[i * b:(i + 1) * b], vt[i * b:(i + 1) * b] = ui[:, :b], si[:b], vti[:b]
    return _orth(u) @ np.diag(s) @ _orth(vt)


def dense_iso_c(taus):
    u, s, vt = np.linalg.svd(sum(taus), full_matrices=False)
    return s.mean() * u @ vt


def dense_iso_cts(taus, f):
    rows, cols = taus[0].shape
    r, t = min(rows, cols), len(taus)
    k0 = int(r * f)
    s_total = round((r - k0) / t) * t
    kc, d = r - s_total, s_total // t
    uc, sc, vtc = np.linalg.svd(sum(taus), full_matrices=False)
    uc, sc, vtc = uc[:, :kc], sc[:kc], vtc[:kc]
    us, ss, vts = [], [], []
    for tau in taus:
        ui, si, vti = np.linalg.svd(tau - uc @ uc.T @ tau, full_matrices=False)
        us.append(ui[:, :d]), ss.append(si[:d]), vts.append(vti[:d])
    u = np.concatenate(us + [uc], axis=1)
    s = np.concatenate(ss + [sc])
    vt = np.concatenate(vts + [vtc], axis=0)
    return _orth(u) @ np.diag(np.full_like(s, s.mean())) @ _orth(vt)


def dense_boost(delta, beta):
    u, s, vt = np.linalg.svd(delta, full_matrices=False)
    share = np.cumsum(s) / s.sum()
    hits = np.nonzero(share >= beta)[0]
    c = hits[0] if len(hits) else len(s) - 1
    return u @ np.diag(np.maximum(s, s[c])) @ vt


def close(ours, expected, atol=2e-4):
    np.testing.assert_allclose(ours.double().numpy(), expected, atol=atol, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_tsv_merge_matches_dense(shape, t):
    base, tensors, taus = random_case(shape, t)
    close(tsv_merge(base, tensors, alpha=0.8, tensor_name=PROJ) - base, 0.8 * dense_tsv(taus))


@pytest.mark.parametrize("shape", SHAPES)
def test_tsv_merge_of_one_is_its_task_vector(shape):
    base, tensors, taus = random_case(shape, 1, seed=3)
    close(tsv_merge(base, tensors, tensor_name=PROJ) - base, taus[0], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [1, 3, 4])
def test_iso_c_matches_dense_and_is_isotropic(shape, t):
    base, tensors, taus = random_case(shape, t)
    merged = iso_c(base, tensors, alpha=1.0, tensor_name=PROJ) - base
    close(merged, dense_iso_c(taus))
    s = torch.linalg.svdvals(merged.double())
    assert float(s.max() - s.min()) < 1e-4 * float(s.max())
    assert abs(float(s.sum()) - float(np.linalg.svd(sum(taus), compute_uv=False).sum())) < 1e-3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t, f", [(2, 0.8), (3, 0.8), (5, 0.5), (1, 0.0)])
def test_iso_cts_matches_dense_and_is_isotropic(shape, t, f):
    base, tensors, taus = random_case(shape, t)
    merged = iso_cts(base, tensors, common_space_fraction=f, tensor_name=PROJ) - base
    close(merged, dense_iso_cts(taus, f))
    s = torch.linalg.svdvals(merged.double())
    assert float(s.max() - s.min()) < 1e-4 * float(s.max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.0, 0.01, 0.3, 0.9, 1.0])
def test_subspace_boosting_matches_dense_and_never_lowers(shape, beta):
    base, tensors, taus = random_case(shape, 3)
    merged = subspace_boosting(base, tensors, beta=beta, lambda_=0.5, tensor_name=PROJ) - base
    close(merged, 0.5 * dense_boost(sum(taus), beta))
    before = np.linalg.svd(0.5 * sum(taus), compute_uv=False)
    after = np.linalg.svd(merged.double().numpy(), compute_uv=False)
    assert np.all(after >= before - 1e-4)


def test_subspace_boosting_leaves_other_tensors_alone():
    base, tensors, taus = random_case((24, 40), 3)
    for name in (EMBED, "model.layers.0.self_attn.q_norm.weight"):
        torch.testing.assert_close(subspace_boosting(base, tensors, tensor_name=name), base + sum(t - base for t in tensors))
    vec_base, vec_tensors, _ = random_case((40,), 3)
    torch.testing.assert_close(subspace_boosting(vec_base, vec_tensors, tensor_name=NORM), vec_base + sum(t - vec_base for t in vec_tensors))


@pytest.mark.parametrize("method", [tsv_merge, iso_c, iso_cts])
def test_subspace_methods_average_outside_their_scope(method):
    for name, shape in ((EMBED, (24, 40)), ("lm_head.weight", (24, 40)), (NORM, (40,))):
        base, tensors, _ = random_case(shape, 3)
        torch.testing.assert_close(method(base, tensors, alpha=1.0, tensor_name=name), base + sum(t - base for t in tensors) / 3)


def test_svd_retries_with_gesvd(monkeypatch):
    from study.methods import common

    matrix = torch.randn(20, 30)
    expected = torch.linalg.svd(matrix, full_matrices=False)
    real = torch.linalg.svd

    def failing(x, *args, **kwargs):
        if "driver" not in kwargs:
            raise torch.linalg.LinAlgError("did not converge")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", failing)
    u, s, vh = common.svd(matrix)
    torch.testing.assert_close(s, expected[1])
    torch.testing.assert_close((u * s) @ vh, matrix, atol=1e-5, rtol=1e-5)
