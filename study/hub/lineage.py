"""Lineage: does a checkpoint descend from the sweep's base, as the model cards tell?

A task vector θ − θ₀ is a checkpoint's fine-tuning delta only if θ was trained from θ₀. The hub records what a
model was trained from in its card's ``base_model`` (a string or a list: a merge or an adapter names several).
A checkpoint's ancestors are found by following ``base_model`` through the cards of the models it names, breadth
first, so a fine-tune of a fine-tune of the base counts; one whose ancestors do not include the base (a
fine-tune of the *pretrained* model when the base is the instruct one, a continual pre-train) is reported with
both names. A card that names no base leaves the lineage unknown, which is reported too: the sweep's
``lineage: strict`` turns both into errors.
"""

from __future__ import annotations

from typing import Callable

MAX_ANCESTORS = 16
"""Cards are followed up to this many ancestors (hub lineages are a few levels deep; this bounds a cycle)."""


def ancestors(parents: list[str], lookup: Callable[[str], list[str] | None]) -> list[str]:
    """Every model reached from ``parents`` through ``lookup`` (a model's card ``base_model`` entries, or None
    when its card cannot be read), breadth first, each once (ids compared case-insensitively, as the hub does)."""
    seen: dict[str, str] = {}
    queue = list(parents)
    while queue and len(seen) < MAX_ANCESTORS:
        repo = queue.pop(0)
        if repo.casefold() in seen:
            continue
        seen[repo.casefold()] = repo
        queue += lookup(repo) or []
    return list(seen.values())


def lineage_problem(label: str, found: list[str], base: str) -> str | None:
    """The one-line problem with a checkpoint whose ancestors are ``found``, or None when they reach ``base``."""
    if any(a.casefold() == base.casefold() for a in found):
        return None
    if not found:
        return (f"{label}: lineage unknown: its model card names no base_model, so nothing shows it was fine-tuned "
                f"from the sweep's base {base}")
    return (f"{label}: lineage: its model card leads to {' -> '.join(found)}, not to the sweep's base {base} "
            f"(so θ - θ₀ is not its fine-tuning delta)")
