"""Small tensor helpers shared by several methods (task vectors, weighted sums, TIES' sign election)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from study.tensors import is_embedding


def task_vectors(base: Tensor, tensors: list[Tensor]) -> list[Tensor]:
    """τᵢ = θᵢ − θ₀."""
    return [t - base for t in tensors]


def per_model(weight: list[float] | float, n: int) -> list[float]:
    """A per-model parameter as a list; a bare number (a signature default, in a direct call) is broadcast."""
    if isinstance(weight, (int, float)):
        return [float(weight)] * n
    if len(weight) != n:
        raise ValueError(f"{len(weight)} per-model values for {n} models")
    return list(weight)


def weighted_sum(tensors: list[Tensor], weight: list[float] | float) -> Tensor:
    """Σ wᵢ tᵢ, accumulated in the inputs' dtype (the driver hands methods float32)."""
    out = torch.zeros_like(tensors[0])
    for t, w in zip(tensors, per_model(weight, len(tensors))):
        out.add_(t, alpha=float(w))
    return out


def stack_weights(weight: list[float], like: Tensor) -> Tensor:
    """Per-model weights shaped to broadcast against a ``(T, *shape)`` stack."""
    return torch.tensor(per_model(weight, like.shape[0]), dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


def disjoint_parts(deltas: Tensor, weight: list[float]) -> tuple[Tensor, Tensor]:
    """TIES steps 2–3 before the division, on a ``(T, *shape)`` stack of (trimmed) task vectors.

    Elect γ = sign(Σ wᵢ τ̂ᵢ) per entry (an exact zero elects +); return Σ wᵢ τ̂ᵢ over the models whose τ̂ᵢ is
    non-zero with sign γ, and the sum of those models' weights (mergekit's ``mixed_delta`` and ``divisor``).
    """
    w = stack_weights(weight, deltas)
    weighted = deltas * w
    elected = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = (torch.sign(deltas) == elected) & (deltas != 0)
    return (weighted * agree).sum(dim=0), (w * agree).sum(dim=0)


def disjoint_merge(deltas: Tensor, weight: list[float], normalize: bool = True) -> Tensor:
    """TIES steps 2–3: the agreeing entries' weighted sum (``disjoint_parts``), divided per entry by the agreeing
    models' weights when ``normalize`` (0 where none agrees), as mergekit's ``ties`` with that ``normalize``."""
    total, norm = disjoint_parts(deltas, weight)
    if not normalize:
        return total
    return torch.where(norm != 0, total / torch.where(norm == 0, torch.ones_like(norm), norm), torch.zeros_like(total))


BLOCK_ELEMENTS = 1 << 18
"""Entries per block when a merge step is elementwise: 1 MiB of float32 per operand, so a block's handful of
float32 temporaries stays in a 2-core machine's cache. Whole tensors are allocated fresh (page-faulted) for
every temporary: on SmolLM2's embedding (28 M entries, k = 2) task arithmetic took 0.5 s whole and 0.07 s in
blocks of 2^18. On a GPU one block is the whole tensor."""


def blocks(n: int, device: torch.device | str) -> list[slice]:
    """Slices covering ``range(n)`` exactly (the last one may be shorter) for block-wise elementwise work on
    ``device``."""
    size = BLOCK_ELEMENTS if torch.device(device).type == "cpu" else max(n, 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


SAMPLE_SIZE = 1 << 14


def kth_smallest(values: Tensor, k: int) -> Tensor:
    """Exactly ``torch.kthvalue(values, k).values`` for a 1-D tensor (k is 1-based), several times faster on
    large CPU tensors (``kth_smallest_counted``)."""
    return kth_smallest_counted(values, k)[0]


def _counted(values: Tensor, value: Tensor) -> tuple[Tensor, int, int]:
    return value, int((values < value).sum()), int((values == value).sum())


def kth_smallest_counted(values: Tensor, k: int) -> tuple[Tensor, int, int]:
    """``(v, below, equal)``: v = ``torch.kthvalue(values, k).values`` exactly, with the counts of entries
    below and equal to it (what an exact top-k needs to resolve ties at v).

    ``kthvalue`` is a single-threaded quickselect over a copy (4.2 s of a 7.8 s TIES merge of two SmolLM2
    checkpoints). Here a random sample brackets the answer, two vectorised passes count the entries below
    the bracket and gather the few inside it, and ``kthvalue`` runs on that small set, whose counts give
    ``below`` and ``equal`` without another pass. When the bracket misses (an unlucky sample, many ties), it
    falls back to ``kthvalue`` on everything: never approximate.
    """
    n = values.numel()
    if n <= 4 * SAMPLE_SIZE or values.device.type != "cpu":
        return _counted(values, torch.kthvalue(values, k).values)
    # Random positions (fixed seed): a regular stride can be a multiple of the row length and sample one column.
    positions = torch.randint(0, n, (SAMPLE_SIZE,), generator=torch.Generator().manual_seed(0))
    sample = values[positions]
    m = sample.numel()
    # The rank k/n in the sample, widened by ~6 binomial standard deviations on each side.
    margin = int(6 * (m * (k / n) * (1 - k / n)) ** 0.5) + 8
    centre = k * m // n
    ordered = torch.sort(sample).values
    lo, hi = ordered[max(0, centre - margin)], ordered[min(m - 1, centre + margin)]
    below = int((values < lo).sum())
    if bool(lo == hi):  # a tie spans the bracket (bf16 task vectors have many exact zeros): no selection left
        at_most = int((values <= hi).sum())
        if below < k <= at_most:
            return lo.clone(), below, at_most - below
        return _counted(values, torch.kthvalue(values, k).values)
    inside = values[(values >= lo) & (values <= hi)]
    if below < k <= below + inside.numel():
        value = torch.kthvalue(inside, k - below).values
        return value, below + int((inside < value).sum()), int((inside == value).sum())
    return _counted(values, torch.kthvalue(values, k).values)


@dataclass(frozen=True)
class TopK:
    """Which entries a selection of the largest magnitudes keeps: every |x| > ``value``, and of the entries with
    |x| == ``value`` the first ``ties`` in flat (row-major) order, or all of them when ``ties`` is None.

    This is the set that a stable descending sort's first ``keep`` positions hold, i.e. mergekit's
    ``argsort(|x|, descending=True)[:keep]`` with equal magnitudes ordered by position (mergekit's own sort is
    not stable, so its choice among equal magnitudes is whatever the sort kernel gives).
    """

    value: float
    ties: int | None = None


KEEP_ALL = TopK(0.0)


def top_k_cut(magnitudes: Tensor, keep: int) -> TopK:
    """The ``TopK`` that keeps exactly ``keep`` entries of the 1-D float32 ``magnitudes`` (all when keep >= n).

    ``kth_smallest_counted`` finds the threshold without a full sort, and how many entries equal to it fit.
    """
    n = magnitudes.numel()
    if keep >= n:
        return KEEP_ALL
    value, below, equal = kth_smallest_counted(magnitudes, n - keep + 1)
    above = n - below - equal
    return TopK(float(value), None if above + equal == keep else keep - above)


def top_k_mask(magnitudes: Tensor, cut: TopK, seen: int = 0) -> tuple[Tensor, int]:
    """The keep mask of one 1-D block of magnitudes under ``cut``, and the count of entries equal to
    ``cut.value`` seen so far (``seen`` of them in earlier blocks), so that a tensor masked block by block gets
    the same mask as at once. Only the block where the quota of ties runs out needs their positions."""
    if cut.ties is None:
        return magnitudes >= cut.value, seen
    if seen >= cut.ties:
        return magnitudes > cut.value, seen
    equal = magnitudes == cut.value
    count = int(equal.sum())
    mask = magnitudes >= cut.value
    if seen + count > cut.ties:
        last = int(torch.nonzero(equal).flatten()[cut.ties - seen - 1])
        mask[last + 1 :] = magnitudes[last + 1 :] > cut.value
    return mask, seen + count


def keep_count(density: float, n: int) -> int:
    """How many entries a magnitude trim keeps: ``max(1, ⌊density·n⌋)``, mergekit's ``magnitude`` count."""
    return max(1, int(density * n))


def keep_top_magnitude(delta: Tensor, density: float) -> Tensor:
    """Zero all but exactly ``max(1, ⌊density·n⌋)`` entries of largest |value|; among equal magnitudes at the
    threshold the lowest flat indices are kept (see ``TopK``)."""
    mag = delta.abs().flatten().float()
    mask, _ = top_k_mask(mag, top_k_cut(mag, keep_count(density, delta.numel())))
    return torch.where(mask.view_as(delta), delta, torch.zeros_like(delta))


def ascending_rank_window(magnitudes: Tensor, lo: int, hi: int) -> Tensor:
    """The mask of the entries whose rank in a **stable ascending** sort of the 1-D ``magnitudes`` is in
    [lo, hi): ``sort(magnitudes, stable=True).indices[lo:hi]`` as a mask, found without sorting.

    The two boundary values come from ``kth_smallest``; entries strictly between them are in, and entries equal to
    a boundary value are in when their rank (entries below the value, plus their position among the equal
    ones) falls in the window.
    """
    n = magnitudes.numel()
    if lo >= hi:
        return torch.zeros_like(magnitudes, dtype=torch.bool)
    if lo == 0 and hi >= n:
        return torch.ones_like(magnitudes, dtype=torch.bool)
    low = kth_smallest(magnitudes, lo + 1)
    high = kth_smallest(magnitudes, hi)
    mask = (magnitudes > low) & (magnitudes < high)
    for value in {float(low), float(high)}:
        equal = magnitudes == value
        rank = torch.cumsum(equal, 0) - 1 + int((magnitudes < value).sum())
        mask |= equal & (rank >= lo) & (rank < hi)
    return mask


PROJECTION_MARKERS = (
    ".self_attn.q_proj.weight",
    ".self_attn.k_proj.weight",
    ".self_attn.v_proj.weight",
    ".self_attn.o_proj.weight",
    ".mlp.gate_proj.weight",
    ".mlp.up_proj.weight",
    ".mlp.down_proj.weight",
)


def is_2d_non_embedding(name: str | None, tensor: Tensor) -> bool:
    """methods.md's scope of the subspace methods: two dimensions, not a token embedding or output projection
    (``embed_tokens`` / ``lm_head``, or their GPT-2 / GPT-NeoX names: ``study.tensors.EMBEDDING_MARKERS``)."""
    return tensor.dim() == 2 and not is_embedding(name)


def is_projection(name: str | None) -> bool:
    """methods.md's "projection": an attention or MLP projection weight (subspace boosting's scope)."""
    return any(m in (name or "") for m in PROJECTION_MARKERS)


ALPHA_APPLIES_HELP = (
    "true: alpha scales the merged delta (mergekit PR #639 at 903c139, where lambda scales it); false: alpha has "
    "no effect, theta = base + merged (the study fork at 3f031f3, where the subspace result replaced the scaled "
    "delta, so the study's v1 effectively used alpha 1)"
)
ALPHA_RANGES: dict[str, dict[str, Any]] = {
    "alpha": {"help": "scale of the merged task vector added to the base (the study fork's lambda; see alpha_applies)"},
    "alpha_applies": {"help": ALPHA_APPLIES_HELP},
}
"""``alpha`` and ``alpha_applies`` of the study fork's subspace methods (``tsv_merge``, ``iso_c``)."""
ALPHA_APPLIES_NOTE = "alpha_applies: false is the fork before 903c139, where lambda had no effect."
USE_BASE_HELP = (
    "true: interpolate the task vectors theta_i - theta_0 and add the base back (mergekit with a base_model); "
    "false: interpolate the checkpoints' weights, base unused (mergekit without one)"
)
"""``use_base`` of mergekit's spherical methods that take a base only optionally (``nuslerp``, ``multislerp``)."""


def mean_of(tensors: list[Tensor]) -> Tensor:
    """The unweighted mean, the subspace methods' rule for tensors outside their SVD scope."""
    return weighted_sum(tensors, [1.0] * len(tensors)) / len(tensors)


def subspace_merge(base: Tensor, tensors: list[Tensor], tensor_name: str | None, alpha: float,
                   matrix_delta: Callable[[list[Tensor]], Tensor]) -> Tensor:
    """θ₀ + α · ``matrix_delta(τ₁, …, τ_T)`` on a tensor in the subspace methods' scope (``is_2d_non_embedding``),
    θ₀ + α · the mean of the τᵢ on any other tensor."""
    deltas = task_vectors(base, tensors)
    if is_2d_non_embedding(tensor_name, base):
        return base + alpha * matrix_delta(deltas).to(base.device)
    return base + alpha * mean_of(deltas)


def stack_top_triplets(matrices: Iterable[Tensor], b: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stacked factors U (rows × r), S (r), Vᵀ (r × cols) of ``like``'s shape, r = min(rows, cols): block i
    holds the top ``b`` singular triplets of the i-th matrix, entries past the last block stay zero (TSV-M's
    layout; Iso-CTS's task blocks). ``matrices`` may be a generator, so only one is in memory at a time."""
    rows, cols = like.shape
    r = min(rows, cols)
    u = like.new_zeros(rows, r)
    s = like.new_zeros(r)
    vh = like.new_zeros(r, cols)
    for i, matrix in enumerate(matrices):
        ui, si, vhi = svd(matrix)
        u[:, i * b : (i + 1) * b] = ui[:, :b]
        s[i * b : (i + 1) * b] = si[:b]
        vh[i * b : (i + 1) * b, :] = vhi[:b, :]
    return u, s, vh


def svd(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Thin SVD ``(U, S, Vh)`` in float32, singular values descending.

    The default LAPACK/cuSOLVER routine (divide and conquer) occasionally fails to converge on
    ill-conditioned task vectors; methods.md asks for a retry with ``gesvd`` (slower, more robust). On CUDA
    that is torch's ``driver="gesvd"``; on the CPU torch offers no driver choice, so SciPy's ``gesvd`` runs.
    """
    x = matrix.float()
    try:
        return torch.linalg.svd(x, full_matrices=False)
    except RuntimeError:
        if x.is_cuda:
            return torch.linalg.svd(x, full_matrices=False, driver="gesvd")
        import scipy.linalg

        u, s, vh = scipy.linalg.svd(x.numpy(), full_matrices=False, lapack_driver="gesvd")
        return tuple(torch.from_numpy(a).to(matrix.device) for a in (u, s, vh))  # type: ignore[return-value]


def orthogonalise(matrix: Tensor) -> Tensor:
    """The nearest matrix with orthonormal columns (or rows): ``P Qᵀ`` from the thin SVD ``P Σ Qᵀ``."""
    p, _, qh = svd(matrix)
    return p @ qh


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from a SHA-256 digest of the parts (Python's ``hash()`` changes between processes)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def dare_mask(shape: torch.Size | tuple[int, ...], density: float, seed: int, index: int, name: str | None) -> Tensor:
    """DARE's keep mask (float 0/1, on the CPU): each entry kept with probability ``density``.

    Drawn on the CPU from a generator seeded by (seed, model index, tensor name), so a merge is reproducible
    across processes and gives the same masks on the CPU and on a GPU.
    """
    gen = torch.Generator(device="cpu")
    gen.manual_seed(stable_seed("dare", seed, index, name))
    return (torch.rand(tuple(shape), generator=gen) < density).float()


def dare_rescale(deltas: list[Tensor], density: float, seed: int, name: str | None) -> list[Tensor]:
    """Drop each entry of τᵢ with probability 1 − density and divide survivors by density (Yu et al. 2024)."""
    if density >= 1.0:
        return deltas
    return [d * dare_mask(d.shape, density, seed, i, name).to(d.device) / density for i, d in enumerate(deltas)]
