"""The lock file: which commit of each hub model a sweep uses, and what was fetched of it.

It lives in the sweep's results directory, the store ``run`` writes into (``results/<sweep name>/`` or
``--store``): ``models.lock.json``. ``fetch`` writes it, one entry per hub model once all of that model's files
are in the cache, and reads it back: a model already in it is fetched at its locked commit again (so a second
fetch, on this machine or another holding the same results directory, gets the same weights even when the hub's
``main`` has moved) until ``fetch --update`` moves every pin to the revision the sweep names. ``validate`` reads
it offline: the lineage recorded at fetch time, and whether the cache still holds the locked commit.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from study.errors import UserError

LOCK_FILE = "models.lock.json"
LOCK_SCHEMA = 1


class LockedModel(BaseModel):
    """One hub model as fetched: the revision the sweep names, the commit it resolved to, its files (name →
    bytes) and its ancestors by model card (``study.hub.lineage``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    revision: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    files: dict[str, int]
    ancestors: list[str] = Field(default_factory=list)


class ModelsLock(BaseModel):
    """Every hub model of one sweep, by its label in the sweep (``org/name`` or ``org/name@revision``)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = Field(default=LOCK_SCHEMA, alias="schema")
    sweep: str
    endpoint: str
    models: dict[str, LockedModel] = Field(default_factory=dict)

    def pins(self) -> dict[str, str]:
        return {label: m.commit for label, m in self.models.items()}


def lock_path(store: Path | None, sweep_name: str) -> Path:
    """``<store>/models.lock.json``; the store defaults to ``results/<sweep name>`` as for ``run``."""
    return (store if store is not None else Path("results") / sweep_name) / LOCK_FILE


def read_lock(path: Path) -> ModelsLock | None:
    """The lock at ``path``, None when there is none; an unreadable one is an error naming it."""
    if not path.is_file():
        return None
    try:
        return ModelsLock.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise UserError(f"{path}: unreadable lock file ({type(exc).__name__}): fix it, or delete it and "
                        f"`merge-study fetch --update` to pin every model anew") from None


def write_lock(path: Path, lock: ModelsLock) -> None:
    from study.store import atomic_write

    atomic_write(path, (json.dumps(lock.model_dump(mode="json", by_alias=True), indent=1) + "\n").encode())
