"""Interference diagnostics of a merge, measured in the merge's own streaming pass and kept with the record.

A merge that fails should say why. The quantities the study's subspace methods are built on (how aligned the
task vectors are, how often their largest entries disagree in sign, how much their top singular subspaces
overlap, whether the merged delta keeps the rank and norm of its parts) are measured for every merge cell
without a second read of the checkpoints: the driver (``study.merge.iter_merge``, argument ``observe``) hands
each float tensor's base, inputs and merged result to ``DiagnosticsAccumulator.add`` as it yields it.

Definitions, with τ_i = checkpoint i − base and Δ = merged − base (float32), per tensor, then per group (the
whole model, a module type such as ``q_proj``, a layer):

- **cosine** (i, j) = <τ_i, τ_j> / (‖τ_i‖ ‖τ_j‖), inner products summed over the group's tensors;
  ``cosine_mean`` is the mean over pairs i < j.
- **sign conflict**: an entry is *top* for τ_i when |τ_i| is non-zero and among the largest ``TOP_FRACTION``
  (20%) of |τ_i| over the tensor, as TIES trims at density 0.2. The rate is the share, among entries top for at
  least two task vectors, of those whose top values have both signs (entries summed over the group).
- **subspace overlap** (projections: 2-D weights other than embeddings and ``lm_head``): ‖V_iᵀ V_j‖²_F / r,
  V_i an orthonormal basis of τ_i's top r = ``RANK`` (4) right singular subspace (r is the smaller count of
  the pair when a task vector has fewer directions above 1% of its top singular value): 1 for identical
  subspaces, 0 for orthogonal ones. V_i is a randomized estimate (a seeded Gaussian sketch of r columns and one
  power iteration). A group's value is the mean over its projections.
- **effective rank** (projections): the participation ratio (Σσ²)² / Σσ⁴ of the singular values σ, 1 for a
  rank-one matrix and n for n equal singular values, of Δ and (averaged over i) of τ_i; ``rank_ratio`` =
  erank(Δ) / mean erank(τ_i) falls as a merge concentrates its energy in fewer directions (rank collapse).
- **norm ratio** ‖Δ‖ / Σ_i ‖τ_i‖: 1 when parallel task vectors are summed, 1/√k for orthogonal ones of equal
  norm, lower when the method shrinks or cancels.

The cost is bounded per tensor, whatever the model (``bench/diagnostics_bench.py``): a tensor with at most
``EXACT_ENTRIES`` entries is seen whole; a larger one through evenly spaced whole rows (the tensor viewed as
rows × last dimension), about ``SAMPLE_ENTRIES`` entries and at least ``ROWS_PER_DIRECTION * RANK`` rows of a
projection. Sums over a sampled tensor are scaled by entries / entries seen, so a group weighs its tensors by
size. Sign conflicts (threshold and counts) are taken on at most ``SIGN_ENTRIES`` evenly strided entries of
what is seen, and the singular quantities on at most ``SPECTRAL_ROWS`` evenly spaced rows of it (the row space
of uniformly sampled rows estimates the right singular subspace). ``Diagnostics.sampled`` says whether any
tensor's rows were sampled. Samples go, as task vectors in float32, into per-shape buffers computed ``BATCH``
tensors at a time, so a tensor costs k + 2 small copies. The same inputs give the same numbers bit for bit,
whichever path (block-wise or whole) merged them.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from study.tensors import is_embedding

DIAGNOSTICS_VERSION = 2
"""Bumped when a definition or a sampling constant changes what is measured (2: r = 4, Cholesky basis, 3 rows
per direction, 1 024 sign entries); records keep the version they were measured with, the cell key does not."""
TOP_FRACTION = 0.2
RANK = 4
EXACT_ENTRIES = 32768
SAMPLE_ENTRIES = 4096
SIGN_ENTRIES = 1024
ROWS_PER_DIRECTION = 3
"""A projection is seen through at least this many rows per direction of its top-RANK subspace."""
SPECTRAL_ROWS = 8 * RANK
"""At most this many rows (evenly spaced among those seen) for the singular quantities."""
BATCH = 64
BUFFER_BYTES = 24 * 1024**2
"""A batch holds at most BATCH tensors' samples and (unless one sample alone is larger) this many bytes."""
SEED = 0

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_LAYER = re.compile(r"\.(?:layers|layer|h|blocks)\.(\d+)\.")


def pairs(k: int) -> list[tuple[int, int]]:
    """The order of every pairwise list: (0, 1), (0, 2), ..., (k - 2, k - 1), checkpoints in cell order."""
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def layer_of(name: str) -> int | None:
    """The transformer block a tensor belongs to (``model.layers.3.mlp...`` → 3); None outside the blocks."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def module_of(name: str) -> str:
    """The module type of a tensor: the last component before ``.weight`` (``q_proj``, ``input_layernorm``,
    ``embed_tokens``); a bias keeps its suffix (``q_proj.bias``) so it is not pooled with the weight."""
    parts = name.split(".")
    if parts[-1] == "weight" and len(parts) > 1:
        return parts[-2]
    return ".".join(parts[-2:])


def is_projection(name: str, shape: tuple[int, ...]) -> bool:
    """A 2-D weight whose singular subspaces mean something: every matrix but the vocabulary ones."""
    return len(shape) == 2 and min(shape) > 1 and not is_embedding(name)


class Stats(BaseModel):
    """One group's diagnostics: the whole model, one module type, or one layer (None: undefined there)."""

    model_config = _FROZEN
    tensors: int = Field(description="float tensors in the group")
    entries: int = Field(description="their entries")
    sampled_entries: int = Field(description="entries the diagnostics saw (== entries when nothing was sampled)")
    cosine: list[float | None] = Field(description="task-vector cosine per pair, in ``pairs(k)`` order")
    sign_conflict: float | None = Field(description="share of entries top for >= 2 task vectors that have both signs")
    subspace_overlap: list[float | None] | None = Field(
        description="per pair, mean over the group's projections of ||V_i^T V_j||_F^2 / r; None: no projection")
    effective_rank_merged: float | None = Field(description="mean over projections of erank(merged - base)")
    effective_rank_tasks: float | None = Field(description="mean over projections and checkpoints of erank(tau_i)")
    norm_merged: float = Field(description="||merged - base|| over the group")
    norm_tasks: list[float] = Field(description="||tau_i|| over the group, per checkpoint")

    @property
    def cosine_mean(self) -> float | None:
        return _mean(self.cosine)

    @property
    def overlap_mean(self) -> float | None:
        return None if self.subspace_overlap is None else _mean(self.subspace_overlap)

    @property
    def norm_ratio(self) -> float | None:
        total = sum(self.norm_tasks)
        return self.norm_merged / total if total > 0 else None

    @property
    def rank_ratio(self) -> float | None:
        m, t = self.effective_rank_merged, self.effective_rank_tasks
        return m / t if m is not None and t else None


class TensorTable(BaseModel):
    """Per-tensor scalars, columns of equal length in the base's tensor order: the per-layer map's data."""

    model_config = _FROZEN
    name: list[str] = Field(default_factory=list)
    layer: list[int | None] = Field(default_factory=list)
    module: list[str] = Field(default_factory=list)
    entries: list[int] = Field(default_factory=list)
    cosine_mean: list[float | None] = Field(default_factory=list)
    sign_conflict: list[float | None] = Field(default_factory=list)
    subspace_overlap: list[float | None] = Field(default_factory=list)
    effective_rank_merged: list[float | None] = Field(default_factory=list)
    effective_rank_tasks: list[float | None] = Field(default_factory=list)
    norm_ratio: list[float | None] = Field(default_factory=list)

    @model_validator(mode="after")
    def _same_length(self) -> "TensorTable":
        lengths = {len(v) for v in self.__dict__.values()}
        if len(lengths) > 1:
            raise ValueError(f"tensor table columns differ in length: {sorted(lengths)}")
        return self


class Diagnostics(BaseModel):
    """A merge's interference diagnostics (module docstring), stored in its record (``Record.diagnostics``)."""

    model_config = _FROZEN
    version: int = DIAGNOSTICS_VERSION
    k: int
    top_fraction: float = TOP_FRACTION
    rank: int = RANK
    sample_entries: int = SAMPLE_ENTRIES
    sampled: bool = Field(description="some tensor was seen through a sample of its rows, so cosines and norms "
                                      "are estimates too (sign conflicts and singular quantities are, beyond a size)")
    overall: Stats
    modules: dict[str, Stats]
    layers: dict[int, Stats]
    tensors: TensorTable

    def scalars(self) -> dict[str, float | None]:
        """The per-cell numbers of ``diagnostics.csv`` (``study.analysis.diagnostics_figures``)."""
        o = self.overall
        defined = [c for c in o.cosine if c is not None]
        return {"cosine_mean": o.cosine_mean, "cosine_min": min(defined) if defined else None,
                "sign_conflict": o.sign_conflict, "subspace_overlap": o.overlap_mean,
                "effective_rank_merged": o.effective_rank_merged, "effective_rank_tasks": o.effective_rank_tasks,
                "rank_ratio": o.rank_ratio, "norm_ratio": o.norm_ratio}


class DiagnosticsAccumulator:
    """Fed once per float tensor by the merge driver (``add``, or call it), in the base's tensor order; then
    ``result``. ``add`` copies the tensor's sample of the base, the k inputs and the merged tensor into the
    buffer of its sample shape; a full buffer is computed as one batch, the rest by ``result``."""

    def __init__(self, k: int, *, top_fraction: float = TOP_FRACTION, rank: int = RANK):
        if not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        self.k, self.top, self.rank = k, top_fraction, rank
        self._buffers: dict[tuple[int, int, bool], tuple[Any, list[tuple[str, int]]]] = {}
        self._batches: list[dict[str, Any]] = []
        self._order: dict[str, int] = {}
        self._sampled = False

    def __call__(self, name: str, base: Any, inputs: list[Any], merged: Any) -> None:
        self.add(name, base, inputs, merged)

    def add(self, name: str, base: Any, inputs: list[Any], merged: Any) -> None:
        """Take one tensor: the base's, each checkpoint's (same shape, any float dtype) and the merged one."""
        import torch

        if len(inputs) != self.k:
            raise ValueError(f"diagnostics for k = {self.k} got {len(inputs)} inputs for tensor {name}")
        n = base.numel()
        if n == 0:
            return
        if name in self._order:
            raise ValueError(f"diagnostics got tensor {name} twice")
        cols = base.shape[-1] if base.dim() > 1 or n <= EXACT_ENTRIES else math.gcd(n, 256)  # a long vector: rows
        rows = n // cols
        proj = is_projection(name, tuple(base.shape))
        least = ROWS_PER_DIRECTION * self.rank if proj else 1
        take = rows if n <= EXACT_ENTRIES else min(rows, max(least, -(-SAMPLE_ENTRIES // cols)))
        self._sampled |= take < rows
        step = rows // take  # rows 0, step, 2 step, ...: evenly spaced, and a strided view (one copy, no gather)
        key = (take, cols, proj)
        if key not in self._buffers:
            slots = max(1, min(BATCH, BUFFER_BYTES // (4 * (self.k + 2) * take * cols)))
            self._buffers[key] = (torch.empty((self.k + 2, slots, take, cols), dtype=torch.float32), [])
        buffer, names = self._buffers[key]
        slot = len(names)
        sampled = buffer[0, slot].copy_(base.reshape(rows, cols)[: step * take: step])
        for i, t in enumerate([*inputs, merged], 1):  # x - base in float32, straight into the buffer
            torch.sub(t.reshape(rows, cols)[: step * take: step], sampled, out=buffer[i, slot])
        self._order[name] = len(self._order)
        names.append((name, n))
        if len(names) == buffer.shape[1]:
            self._flush(key)

    def _flush(self, key: tuple[int, int, bool]) -> None:
        """Compute the buffered tensors of ``key``; the buffer is kept for the next ones (no allocation churn
        between the merge's own allocations)."""
        buffer, names = self._buffers[key]
        if names:
            self._batches.append(_batch(buffer[:, :len(names)], list(names), self.k, self.top,
                                        self.rank if key[2] else 0))
            names.clear()

    def result(self) -> Diagnostics:
        """Compute what is still buffered, then aggregate per tensor, module type, layer and model."""
        import numpy as np

        for key in sorted(self._buffers):
            self._flush(key)
        self._buffers.clear()
        k = self.k
        names = [n for b in self._batches for n, _ in b["names"]]
        if not names:
            raise ValueError("diagnostics saw no float tensor")
        order = np.argsort([self._order[n] for n in names], kind="stable")
        cat = {f: np.concatenate([b[f] for b in self._batches])[order]
               for f in ("entries", "seen", "gram", "delta_sq", "multi", "conflict", "projection", "overlap", "erank")}
        names = [names[i] for i in order]
        modules, layers = [module_of(n) for n in names], [layer_of(n) for n in names]
        table = _tensor_columns(cat, k)
        groups = {m: [i for i, x in enumerate(modules) if x == m] for m in dict.fromkeys(modules)}
        numbered = sorted({x for x in layers if x is not None})
        by_layer = {i: [j for j, x in enumerate(layers) if x == i] for i in numbered}
        members = [list(range(len(names))), *groups.values(), *by_layer.values()]
        stats = _group_stats(cat, members, k)
        return Diagnostics(k=k, top_fraction=self.top, rank=self.rank, sampled=self._sampled, overall=stats[0],
                           modules=dict(zip(groups, stats[1:1 + len(groups)])),
                           layers=dict(zip(by_layer, stats[1 + len(groups):])),
                           tensors=TensorTable(name=names, layer=layers, module=modules,
                                               entries=[int(x) for x in cat["entries"]], **table))


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _nanmean(x: Any, axis: Any) -> Any:
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _none(values: Any) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values.tolist()]


def _ratio(num: Any, den: Any) -> Any:
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _upper(m: Any, k: int) -> Any:
    """The pairs i < j of (..., k, k) arrays, as (..., k(k - 1)/2) in ``pairs(k)`` order."""
    i, j = zip(*pairs(k)) if k > 1 else ((), ())
    return m[..., list(i), list(j)]


def _cosines(gram: Any, k: int) -> Any:
    import numpy as np

    norms = np.sqrt(np.diagonal(gram, axis1=-2, axis2=-1))
    return _ratio(_upper(gram, k), _upper(norms[..., :, None] * norms[..., None, :], k))


def _tensor_columns(cat: dict[str, Any], k: int) -> dict[str, list[float | None]]:
    """Each tensor's scalars, computed on the stacked arrays at once (no per-tensor Python work)."""
    import numpy as np

    norms = np.sqrt(np.diagonal(cat["gram"], axis1=-2, axis2=-1)).sum(-1)
    return {"cosine_mean": _none(_nanmean(_cosines(cat["gram"], k), -1)),
            "sign_conflict": _none(_ratio(cat["conflict"], cat["multi"])),
            "subspace_overlap": _none(_nanmean(_upper(cat["overlap"], k), -1)),
            "effective_rank_merged": _none(cat["erank"][:, k]),
            "effective_rank_tasks": _none(_nanmean(cat["erank"][:, :k], -1)),
            "norm_ratio": _none(_ratio(np.sqrt(cat["delta_sq"]), norms))}


def _group_stats(cat: dict[str, Any], members: list[list[int]], k: int) -> list[Stats]:
    """Each group's ``Stats`` from its member tensors' rows, all groups at once (a 0/1 membership matrix)."""
    import numpy as np

    w = np.zeros((len(members), len(cat["entries"])))
    for g, idx in enumerate(members):
        w[g, idx] = 1.0
    wp = w * cat["projection"][None, :]

    def nan_mean(values: Any) -> Any:
        """Mean over each group's projections of ``values`` (T, ...), NaNs left out."""
        flat = values.reshape(len(values), -1)
        ok = ~np.isnan(flat)
        return _ratio(wp @ np.where(ok, flat, 0.0), wp @ ok).reshape(len(members), *values.shape[1:])

    gram = np.einsum("gt,tij->gij", w, cat["gram"])
    sums = {f: w @ cat[f] for f in ("entries", "seen", "delta_sq", "multi", "conflict")}
    conflict = _ratio(sums["conflict"], sums["multi"])
    overlap, erank_merged = nan_mean(_upper(cat["overlap"], k)), nan_mean(cat["erank"][:, k])
    tasks = cat["erank"][:, :k]
    ok = ~np.isnan(tasks)
    erank_tasks = _ratio(wp @ np.where(ok, tasks, 0.0).sum(1), wp @ ok.sum(1))
    has_projection = wp.sum(1) > 0
    return [Stats(tensors=len(idx), entries=int(sums["entries"][g]), sampled_entries=int(sums["seen"][g]),
                  cosine=_none(_cosines(gram[g], k)), sign_conflict=_none(conflict[g:g + 1])[0],
                  subspace_overlap=_none(overlap[g]) if has_projection[g] else None,
                  effective_rank_merged=_none(erank_merged[g:g + 1])[0] if has_projection[g] else None,
                  effective_rank_tasks=_none(erank_tasks[g:g + 1])[0] if has_projection[g] else None,
                  norm_merged=float(np.sqrt(sums["delta_sq"][g])),
                  norm_tasks=[float(x) for x in np.sqrt(np.diagonal(gram[g]))])
            for g, idx in enumerate(members)]


def _batch(batch: Any, names: list[tuple[str, int]], k: int, top: float, rank: int) -> dict[str, Any]:
    """Per-tensor sums of N tensors sharing one sample shape: ``batch`` is (k + 2, N, rows, cols) with the base,
    the k task vectors and the merged delta (input-major, so the task vectors are one contiguous block); ``rank``
    0 skips the singular part (not projections). Sums are scaled to the whole tensor (× entries / entries seen)."""
    import numpy as np
    import torch

    _, n, rows, cols = batch.shape
    tasks, delta = batch[1:k + 1], batch[k + 1]
    flat = tasks.reshape(k, n, rows * cols)
    seen = flat.shape[-1]
    entries = np.array([e for _, e in names], dtype=np.float64)
    scale = entries / seen
    gram = torch.einsum("inl,jnl->nij", flat, flat).double().numpy() * scale[:, None, None]
    delta_sq = delta.reshape(n, seen).square().sum(-1).double().numpy() * scale
    probe = flat[..., ::max(1, -(-seen // SIGN_ENTRIES))]
    kth = probe.shape[-1] - math.ceil(top * probe.shape[-1]) + 1
    magnitude = probe.abs()
    threshold = magnitude.kthvalue(kth, dim=-1, keepdim=True).values.clamp_min(torch.finfo(torch.float32).tiny)
    top = magnitude >= threshold  # never 0, so a top entry has a sign
    count, positive = top.sum(0, dtype=torch.int16), (top & (probe > 0)).sum(0, dtype=torch.int16)
    probe_scale = entries / probe.shape[-1]
    multi = (count >= 2).sum(-1).double().numpy() * probe_scale
    conflict = ((positive > 0) & (positive < count)).sum(-1).double().numpy() * probe_scale
    if rank:
        overlap, erank = _spectral(tasks, delta, rank)
    else:
        overlap, erank = np.full((n, k, k), np.nan), np.full((n, k + 1), np.nan)
    return {"names": names, "entries": entries, "seen": np.full(n, float(seen)), "gram": gram, "delta_sq": delta_sq,
            "multi": multi, "conflict": conflict, "projection": np.full(n, bool(rank)), "overlap": overlap,
            "erank": erank}


def _spectral(tasks: Any, delta: Any, rank: int) -> tuple[Any, Any]:
    """Pairwise top-``rank`` right-subspace overlaps of the task vectors, (N, k, k) with NaN where undefined,
    and participation-ratio effective ranks, (N, k + 1): the k task vectors, then the merged delta. ``tasks`` is
    (k, N, rows, cols), ``delta`` (N, rows, cols).

    For each (rows × cols) sample A with row Gram G = A Aᵀ, the subspace is the range of Aᵀ G Ω (Ω a seeded
    Gaussian rows × r matrix: a randomized range finder with one power iteration). Its basis V = Aᵀ M is
    orthonormalised in the small space, M = G Ω L⁻ᵀ with L L ᵀ the Cholesky factor of Ωᵀ G³ Ω (float64), so
    only G and Mᵀ A touch the long dimension. A ridge at float32 precision (relative (r ε)² on Ωᵀ G³ Ω, about 1%
    of the top singular value) fades out directions the task vector does not have (rank < r, or float32
    noise): V's squared norm counts the directions kept, and the overlap divides by the smaller count."""
    import numpy as np
    import torch

    k, n, rows, cols = tasks.shape
    limit = SPECTRAL_ROWS * rank // RANK
    if rows > limit:
        pick = [round(i * (rows - 1) / (limit - 1)) for i in range(limit)]
        tasks, delta, rows = tasks[:, :, pick], delta[:, pick], limit
    gram = (tasks @ tasks.transpose(-1, -2)).double()
    grams = (gram, (delta @ delta.transpose(-1, -2)).double()[None])
    trace = torch.cat([g.diagonal(dim1=-2, dim2=-1).sum(-1) for g in grams])
    fro = torch.cat([g.square().sum((-1, -2)) for g in grams])
    erank = torch.where(trace > 0, trace.square() / fro.clamp_min(1e-300), float("nan"))
    r = min(rank, rows, cols)
    omega = torch.randn(rows, r, generator=torch.Generator().manual_seed(SEED), dtype=torch.float64)
    z = gram @ omega
    small = z.transpose(-1, -2) @ gram @ z
    floor = small.diagonal(dim1=-2, dim2=-1).amax(-1) * (r * torch.finfo(torch.float32).eps) ** 2
    chol = torch.linalg.cholesky_ex(small + floor[..., None, None] * torch.eye(r, dtype=torch.float64)).L
    m = torch.linalg.solve_triangular(chol, z.transpose(-1, -2), upper=False)  # Mᵀ = L⁻¹ zᵀ
    basis = m.float() @ tasks  # (k, N, r, cols): Vᵀ of each task vector
    cross = torch.zeros(n, k, k, dtype=torch.float64)  # ||V_iᵀ V_j||_F^2; on the diagonal ||V_i||_F^2 = directions kept
    for i in range(k):
        for j in range(i, k):
            product = (basis[i] @ basis[j].transpose(-1, -2)).double()
            cross[:, i, j] = cross[:, j, i] = (product.diagonal(dim1=-2, dim2=-1).sum(-1) if i == j
                                               else product.square().sum((-1, -2)))
    ranks = cross.diagonal(dim1=1, dim2=2)
    least = torch.minimum(ranks[:, :, None], ranks[:, None, :])
    overlap = torch.where(least > 0.5, cross / least.clamp_min(0.5), float("nan"))
    return overlap.numpy(), erank.T.numpy().astype(np.float64)
