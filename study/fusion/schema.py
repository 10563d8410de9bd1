"""What a fusion method declares: its own parameters, and the training parameters every fusion cell shares.

A fusion method is a pure tensor function decorated with :func:`fusion_method`: given the k teachers'
next-token distributions at N target positions (top-K, already in the target's vocabulary) and each teacher's
cross-entropy on the gold token there, it returns one distribution per position. Corpus, teachers' forward
passes, alignment across vocabularies, training and device are the driver's job (``study.fusion.cell``), as
streaming and device are the merge driver's. Parameters come from the keyword-only signature, as for
``@merge_method`` (:mod:`study.methods.schema`), and are checked by the same :class:`Param`.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from dataclasses import dataclass
from typing import Any, Callable

from study.errors import MethodError
from study.methods.schema import Param, _param_from_signature

TRAINING_PARAMS: tuple[Param, ...] = (
    Param("steps", int, 100, low=1,
          help="optimizer steps training the target (the cell's compute budget: steps x batch sequences)"),
    Param("lr", float, 1e-3, low=0.0, low_open=True,
          help="peak AdamW learning rate (linear warm-up over the first 10% of steps, then cosine to 10%)"),
    Param("lambda", float, 0.5, low=0.0, high=1.0,
          help="loss mix: (1 - lambda) * LM cross-entropy on the corpus + lambda * cross-entropy to the fused "
               "distribution (FuseLLM's lambda; 0 is plain fine-tuning on the corpus, 1 pure distillation)"),
    Param("top_k", int, 10, low=1,
          help="teacher tokens kept per position (the cached top-K of each teacher's next-token distribution)"),
    Param("batch", int, 16, low=1, help="corpus sequences per optimizer step"),
    Param("seed", int, 0, help="seed of the batch draws (and of anything random in training)"),
)
"""Parameters of every fusion cell, before the method's own: they decide the trained weights, so they are part
of the cell key like the method's parameters."""
TRAINING_NAMES = frozenset(p.name for p in TRAINING_PARAMS)


@dataclass(frozen=True)
class FusionInfo:
    """What the driver and the CLI know about a fusion method, besides its function."""

    name: str
    fn: Callable[..., Any]
    method_params: tuple[Param, ...]
    reference: str = ""
    summary: str = ""
    version: int = 1
    """Semantics version, in every fusion cell key: bump it when the method computes something else."""
    arg_names: dict[str, str] | None = None

    @property
    def params(self) -> tuple[Param, ...]:
        return TRAINING_PARAMS + self.method_params

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, types and ranges checked; an unknown name is an error with a suggestion."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], list(known), n=1)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            raise MethodError(f"fusion method {self.name!r} has no parameter {unknown[0]!r}{did} "
                              f"(parameters: {', '.join(known)})")
        return {p.name: p.check(given.get(p.name, p.default), self.name) for p in self.params}

    def method_kwargs(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """The method's own parameters under its function's argument names (``lambda`` never reaches it)."""
        names = self.arg_names or {}
        return {names.get(p.name, p.name): resolved[p.name] for p in self.method_params}


def _hints(fn: Callable[..., Any], arg: inspect.Parameter) -> dict[str, Any]:
    """The one keyword argument's type, its string annotation evaluated (the tensor arguments' ``Tensor``
    hints are never evaluated, so a method module need not import torch to be described)."""
    hint = arg.annotation
    if isinstance(hint, str):
        hint = eval(hint, {**vars(typing), **fn.__globals__})  # noqa: S307 - an annotation of our own code
    return {} if hint is inspect.Parameter.empty else {arg.name: hint}


def fusion_method(name: str, *, reference: str = "", version: int = 1,
                  ranges: dict[str, dict[str, Any]] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a fusion method ``fn(logprobs, ids, gold_ce, *, <params>) -> (ids, probs)``.

    Inputs, for N target positions and k teachers: ``ids`` [k, N, K] target-vocabulary ids, ``logprobs``
    [k, N, K] the teachers' log-probabilities of them (``-inf`` pads a row with fewer than K entries; a row's
    entries are the teacher's top-K, not renormalised), ``gold_ce`` [k, N] each teacher's cross-entropy on the
    gold token. Output: ``ids`` [N, M] and ``probs`` [N, M], each row a distribution summing to 1 (padding has
    probability 0). ``ranges`` adds bounds, choices and ``help`` per parameter; every parameter needs help.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TypeError(f"fusion method {name!r}: version must be an integer >= 1, got {version!r}")

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        params, arg_names = [], {}
        for arg in inspect.signature(fn).parameters.values():
            if arg.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            hints = _hints(fn, arg)
            p = _param_from_signature(arg, hints, (ranges or {}).get(arg.name.rstrip("_"), {}))
            if p.name in TRAINING_NAMES:
                raise TypeError(f"fusion method {name!r}: parameter {p.name!r} is a training parameter of every "
                                f"fusion cell; name it otherwise")
            params.append(p)
            arg_names[p.name] = arg.name
        doc = inspect.getdoc(fn) or ""
        fn.__fusion_method__ = FusionInfo(  # type: ignore[attr-defined]
            name=name, fn=fn, method_params=tuple(params), reference=reference,
            summary=doc.split("\n\n")[0].replace("\n", " "), version=version, arg_names=arg_names)
        return fn

    return wrap
