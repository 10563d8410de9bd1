"""What ``merge-study methods`` prints: every method with its parameters, defaults, applicable k, reference.

Describing imports each method's module (and so torch); listing names (``registry.method_names``) does not.
Adapters (``mergekit:<name>``, ``peft:<combination_type>``) are described as families, since their parameters
come from the library at use time; ``describe_method("mergekit:della")`` gives one in full.
"""

from __future__ import annotations

from typing import Any

from study.methods.registry import MethodInfo, get_method, method_names

ADAPTER_FAMILIES = (
    {
        "name": "mergekit:<name>",
        "summary": "any mergekit merge method (e.g. mergekit:della), run through mergekit's Python API",
        "reference": "https://github.com/arcee-ai/mergekit",
    },
    {
        "name": "peft:<combination_type>",
        "summary": "LoRA checkpoints combined by PEFT add_weighted_adapter (linear, svd, cat, ties, dare_ties, ...) "
        "and merged into the base",
        "reference": "https://huggingface.co/docs/peft/developer_guides/model_merging",
    },
)


def _describe(info: MethodInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "summary": info.summary,
        "reference": info.reference,
        "applicable_k": info.applicable_k,
        "needs_base": info.needs_base,
        "params": [
            {
                "name": p.name,
                "type": p.type.__name__,
                "per_model": p.per_model,
                "default": p.default,
                "choices": list(p.choices) if p.choices else None,
                "range": p.describe().split(" in ", 1)[1] if " in " in p.describe() else None,
                "text": p.describe(),
            }
            for p in info.params
        ],
    }


def describe_method(name: str) -> dict[str, Any]:
    """One method (native, plugin or a concrete adapter such as ``mergekit:della``) as plain data."""
    return _describe(get_method(name))


def describe_methods() -> list[dict[str, Any]]:
    """Every registered native and plugin method, then the two adapter families."""
    return [describe_method(n) for n in method_names()] + [dict(f, applicable_k="", params=[]) for f in ADAPTER_FAMILIES]


def format_methods() -> str:
    """A plain-text listing for the terminal."""
    lines = []
    for m in describe_methods():
        k = f"  (k: {m['applicable_k']})" if m["applicable_k"] else ""
        lines.append(f"{m['name']}{k} — {m['summary']}")
        if m["reference"]:
            lines.append(f"    {m['reference']}")
        for p in m["params"]:
            lines.append(f"    {p['text']}")
    return "\n".join(lines)
