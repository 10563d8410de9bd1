"""The streaming merge driver: one tensor name at a time across the base and all checkpoints.

Peak memory is about (k + 2) times the largest tensor, never k times the model: for each name the driver
reads the base tensor and the k checkpoint tensors, checks them (present, same shape, finite), hands them to
the method in float32 on the chosen device, casts the result back to the base dtype and yields it. Methods
that need a global statistic declare a ``prepass``, which gets its own streaming pass first.
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from study.errors import MergeInputError
from study.merged_dir import MODEL_FILES, Staging, check_output
from study.methods.registry import MethodInfo, get_method
from study.sources import open_source
from study.tensors import TensorSource, all_finite, is_embedding, is_float_dtype


@dataclass
class MergeInputs:
    """What a method's prepass sees: the sources and a way to stream aligned float32 tensors."""

    base: TensorSource
    checkpoints: list[TensorSource]
    device: str
    vocab_mismatch: str = "refuse"
    statistics_dir: Path | None = None
    """Where data-dependent statistics are cached (``study.statistics``; None: the user cache); a sweep sets
    its store's ``statistics/``."""

    def tensor_names(self) -> list[str]:
        return self.base.names()

    def load_raw(self, name: str, check_finite: bool = True) -> tuple[Any, list[Any]]:
        """Base tensor and each checkpoint's tensor for ``name`` as stored (dtype, CPU), checked and aligned.

        ``check_finite=False`` leaves the NaN/Inf check to the caller (the block-wise path checks each block
        while it is in cache instead of reading every tensor twice).
        """
        base = self.base.get(name)
        target_shape = tuple(base.shape)
        tensors = []
        for src in self.checkpoints:
            if name not in set(src.names()):
                raise MergeInputError(f"tensor {name} is in the base but missing from checkpoint {src.path}")
            t = src.get(name)
            if tuple(t.shape) != target_shape:
                t = self._fit_vocab(name, t, target_shape, src)
            tensors.append(t)
        if check_finite:
            for src, t in [(self.base, base), *zip(self.checkpoints, tensors)]:
                if not all_finite(t):
                    raise non_finite(name, src.path)
        return base, tensors

    def load(self, name: str) -> tuple[Any, list[Any]]:
        """Base tensor and each checkpoint's tensor for ``name``, checked, float32, on the device."""
        import torch

        base, tensors = self.load_raw(name)
        if not base.is_floating_point():
            return base, tensors
        return base.to(self.device, torch.float32), [t.to(self.device, torch.float32) for t in tensors]

    def _fit_vocab(self, name: str, t: Any, shape: tuple[int, ...], src: TensorSource) -> Any:
        extra_rows = is_embedding(name) and tuple(t.shape[1:]) == shape[1:] and t.shape[0] > shape[0]
        if extra_rows and self.vocab_mismatch == "truncate":
            return t[: shape[0]]
        hint = (
            " (extra vocabulary rows: set merge.vocab_mismatch: truncate in the sweep to drop them)"
            if extra_rows
            else ""
        )
        raise MergeInputError(
            f"tensor {name}: shape {tuple(t.shape)} in checkpoint {src.path} != {shape} in the base{hint}"
        )

    def iter_tensors(self, progress: Callable[[str], None] | None = None) -> Iterator[tuple[str, Any, list[Any]]]:
        for name in self.tensor_names():
            if progress:
                progress(name)
            base, tensors = self.load(name)
            yield name, base, tensors


def non_finite(name: str, path: Any) -> MergeInputError:
    return MergeInputError(f"tensor {name} of {path} has non-finite values (NaN or Inf)")


def _accepts(fn: Callable[..., Any], arg: str) -> bool:
    return arg in inspect.signature(fn).parameters


def open_inputs(
    base: Path | None, checkpoints: list[Path], *, device: str = "cpu", vocab_mismatch: str = "refuse",
    opener: Callable[..., TensorSource] = open_source,
) -> MergeInputs:
    """Open the base and checkpoints as tensor sources; a method without a base uses the first checkpoint's layout.

    ``opener`` lets a sweep runner reuse open (and cached) sources across cells.
    """
    base_src = opener(base) if base is not None else None
    ckpts = [opener(Path(p), base_src) for p in checkpoints]
    if base_src is None:
        base_src = ckpts[0]
    return MergeInputs(base_src, ckpts, device, vocab_mismatch)


def iter_merge(
    inputs: MergeInputs,
    method: str | MethodInfo,
    params: dict[str, Any],
    *,
    progress: Callable[[str], None] | None = None,
    observe: Callable[[str, Any, list[Any], Any], None] | None = None,
) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, merged tensor)`` for every tensor of the base, in the base's dtype, on the CPU.

    ``params`` are already resolved (defaults filled, ``1/k`` replaced); non-float tensors (integer buffers)
    are copied from the base. ``observe(name, base, inputs, merged)`` sees every float tensor as read (stored
    dtype, CPU) next to the merged one as yielded, in this same pass (``study.diagnostics``).
    """
    import torch

    from study.allocator import tune_for_streaming

    tune_for_streaming()
    info = method if isinstance(method, MethodInfo) else get_method(method)
    info.check_k(len(inputs.checkpoints))
    requests = info.statistics(params) if info.statistics is not None else None  # before per-tensor binding
    from study.methods.tensor_params import bind_tensor_params  # per-tensor values (gradients, filters), if any

    info, params = bind_tensor_params(info, params, Path(inputs.base.path), len(inputs.checkpoints))
    if info.whole_model is not None:
        yield from _iter_whole_model(inputs, info, params, progress, observe)
        return
    kwargs = info.call_kwargs(params)
    context = info.prepass(inputs, params) if info.prepass is not None else None
    if requests:
        from study.statistics import gather

        context = {**(context or {}), "statistics": gather(inputs, requests, inputs.statistics_dir)}
    pass_name = _accepts(info.fn, "tensor_name")
    pass_context = _accepts(info.fn, "context")
    blockwise = info.elementwise and inputs.device == "cpu"
    for name, raw in _read_in_order(inputs, check_finite=not blockwise):
        if progress:
            progress(name)
        dtype = inputs.base.dtype(name)
        if not is_float_dtype(dtype):
            yield name, raw
            continue
        extra: dict[str, Any] = {}
        if pass_name:
            extra["tensor_name"] = name
        if pass_context:
            extra["context"] = context
        base, tensors = raw
        if blockwise:
            paths = [inputs.base.path, *(c.path for c in inputs.checkpoints)]
            merged = _merge_in_blocks(info, base, tensors, getattr(torch, dtype), {**kwargs, **extra}, name, paths)
            yield name, _observed(observe, name, raw, merged)
            continue
        kernel = getattr(info.fn, "stored_kernel", None)  # e.g. ``model_stock.stored_kernel``: see _merge_in_blocks
        if kernel is not None and inputs.device == "cpu" and info.needs_base:
            out = torch.empty(base.shape, dtype=getattr(torch, dtype))
            if kernel(out, base, tensors, **kwargs, **extra):
                yield name, _observed(observe, name, raw, out)
                continue
        base, tensors = base.to(inputs.device, torch.float32), [t.to(inputs.device, torch.float32) for t in tensors]
        merged = info.fn(base if info.needs_base else None, tensors, **kwargs, **extra)
        if tuple(merged.shape) != tuple(base.shape):
            raise MergeInputError(f"method {info.name} returned shape {tuple(merged.shape)} for {name}, expected {tuple(base.shape)}")
        yield name, _observed(observe, name, raw, merged.to("cpu", getattr(torch, dtype)).contiguous())


def _observed(observe: Callable[[str, Any, list[Any], Any], None] | None, name: str, raw: Any, merged: Any) -> Any:
    """``merged``, after showing it to ``observe`` with the raw ``(base, inputs)`` it was merged from."""
    if observe is not None:
        observe(name, raw[0], raw[1], merged)
    return merged


def _read_in_order(inputs: MergeInputs, check_finite: bool = True) -> Iterator[tuple[str, Any]]:
    """Every tensor name with its raw inputs (``load_raw``; the base tensor alone for integer buffers).

    Reading is sequential on purpose: a read-ahead thread overlapping the next tensor's page faults and
    finiteness check with this tensor's arithmetic was measured 1.5x slower on 2 cores (SmolLM2, k = 2,
    task_arithmetic: 0.78 s vs 0.52 s warm), because it competes with torch's own intra-op threads.
    """
    for name in inputs.tensor_names():
        yield name, (inputs.load_raw(name, check_finite) if is_float_dtype(inputs.base.dtype(name)) else inputs.base.get(name))


def _merge_in_blocks(
    info: MethodInfo, base: Any, tensors: list[Any], dtype: Any, kwargs: dict[str, Any], name: str = "?",
    paths: list[Any] | None = None,
) -> Any:
    """An elementwise method applied block by block, in float32, written straight into the output dtype.

    Bit-identical to calling ``fn`` on the whole float32 tensors (each entry sees the same operations). Each
    input block is checked for NaN/Inf while it is in cache (``paths`` name the base, then the checkpoints).
    """
    import torch

    from study.methods.common import blocks

    out = torch.empty(base.shape, dtype=dtype)
    # A method's fused kernel on the stored dtypes (``task_arithmetic.stored_kernel``); a method rebound per
    # tensor has another ``fn`` and no kernel. False (unsupported dtype, a non-finite result): the path below.
    kernel = getattr(info.fn, "stored_kernel", None)
    if kernel is not None and info.needs_base and kernel(out, base, tensors, **kwargs):
        return out
    flat_out, flat_inputs = out.view(-1), [base.reshape(-1), *(t.reshape(-1) for t in tensors)]
    slices = blocks(flat_out.numel(), "cpu")
    # float32 copies of one block of every input, in buffers reused block after block (fresh ones per block
    # cost an allocation each); the copy is the same conversion as ``.to(torch.float32)``.
    buffers = [torch.empty(slices[0].stop if slices else 0, dtype=torch.float32) for _ in flat_inputs]
    for block in slices:
        b, *blocks_in = [buf[: block.stop - block.start].copy_(x[block]) for buf, x in zip(buffers, flat_inputs)]
        for i, x in enumerate([b, *blocks_in]):
            if not all_finite(x):
                raise non_finite(name, (paths or ["?"] * len(flat_inputs))[i])
        merged = info.fn(b if info.needs_base else None, blocks_in, **kwargs)
        if merged.shape != b.shape:
            raise MergeInputError(f"method {info.name} is declared elementwise but returned shape {tuple(merged.shape)} for a block of {b.numel()}")
        flat_out[block] = merged
    return out


def _iter_whole_model(
    inputs: MergeInputs, info: MethodInfo, params: dict[str, Any], progress: Callable[[str], None] | None,
    observe: Callable[[str, Any, list[Any], Any], None] | None = None,
) -> Iterator[tuple[str, Any]]:
    """A whole-model adapter (mergekit, PEFT) writes the merge to a temporary directory; stream it back.

    Tensors come out in the base's names, shapes and dtypes, like a native merge's. ``observe`` gets the inputs
    as memory maps (``load_raw`` unchecked: the adapter read them), so it reads only the pages it samples.
    """
    import tempfile

    import torch

    from study.tensors import SafetensorsSource

    with tempfile.TemporaryDirectory(prefix="merge-study-adapter-") as tmp:
        out = Path(tmp) / "merged"
        info.whole_model(Path(inputs.base.path), [Path(c.path) for c in inputs.checkpoints], params, out)
        merged = SafetensorsSource(out)
        available = set(merged.names())
        for name in inputs.tensor_names():
            if progress:
                progress(name)
            dtype = inputs.base.dtype(name)
            if not is_float_dtype(dtype):
                yield name, inputs.base.get(name)
                continue
            if name not in available:
                raise MergeInputError(f"method {info.name} wrote no tensor {name} (the base has it)")
            tensor = merged.get(name)
            if tuple(tensor.shape) != tuple(inputs.base.shape(name)):
                raise MergeInputError(
                    f"method {info.name} returned shape {tuple(tensor.shape)} for {name}, expected {inputs.base.shape(name)}"
                )
            out_tensor = tensor.to("cpu", getattr(torch, dtype)).contiguous()
            raw = inputs.load_raw(name, check_finite=False) if observe is not None else None
            yield name, _observed(observe, name, raw, out_tensor)
        merged.close()


def merge_state_dict(inputs: MergeInputs, method: str | MethodInfo, params: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The whole merged state dict in memory (one model's worth), for in-memory evaluation."""
    return dict(iter_merge(inputs, method, params, **kw))


def write_merged(
    inputs: MergeInputs,
    method: str | MethodInfo,
    params: dict[str, Any],
    out: Path,
    *,
    force: bool = False,
    shard_bytes: int = 2 * 1024**3,
    progress: Callable[[str], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a Hugging Face model directory (config, tokenizer, safetensors shards) that Auto classes load.

    ``out`` must not exist, or with ``force`` be a previous merge output (``study.merged_dir``), and never
    touch an input. Tensors are flushed shard by shard, so writing holds at most one shard in memory; the
    directory is built under a hidden sibling and renamed into place, so a failed merge leaves nothing.
    ``metadata`` goes into ``merge_study.json`` and every shard's safetensors metadata.
    """
    from safetensors.torch import save_file

    sources = [inputs.base.path, *(c.path for c in inputs.checkpoints)]
    target = check_output(out, sources, force=force)
    with Staging(target) as staging:
        tmp = staging.path
        layout_dir = Path(inputs.base.path)
        for fname in MODEL_FILES:
            if (layout_dir / fname).is_file():
                shutil.copyfile(layout_dir / fname, tmp / fname)  # not copy2: the umask decides the mode
        staging.write_marker({"merged_by": "merge-study", **(metadata or {})})
        meta = {"format": "pt", "merge_study": json.dumps(metadata or {}, sort_keys=True)}
        shard: dict[str, Any] = {}
        size = 0
        shards: list[list[str]] = []

        def flush() -> None:
            nonlocal shard, size
            if shard:
                shards.append(list(shard))
                save_file(shard, str(tmp / f"shard-{len(shards):05d}.safetensors"), metadata=meta)
                shard, size = {}, 0

        for name, tensor in iter_merge(inputs, method, params, progress=progress):
            nbytes = tensor.numel() * tensor.element_size()
            if shard and size + nbytes > shard_bytes:
                flush()
            shard[name] = tensor
            size += nbytes
        flush()
        n = len(shards)
        if n == 1:
            (tmp / "shard-00001.safetensors").rename(tmp / "model.safetensors")
            staging.match_marker_mode(["model.safetensors"])
        else:
            weight_map = {}
            for i, names in enumerate(shards, 1):
                final = f"model-{i:05d}-of-{n:05d}.safetensors"
                (tmp / f"shard-{i:05d}.safetensors").rename(tmp / final)
                weight_map.update({name: final for name in names})
            (tmp / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
            staging.match_marker_mode(sorted(set(weight_map.values())))
        check_output(out, sources, force=force)  # again: the merge took a while
        staging.commit()
    return Path(out)
