"""Name → implementation tables that import nothing until a name is used (lm-eval's ``api/registry.py`` pattern).

Methods, executors and evaluation backends are each a ``Registry``: built-ins are ``"module:attr"`` strings,
plugins come from an entry-point group or are added at run time (``--plugin``), and an entry is imported on
first use. Listing names therefore costs no import of torch, lm-eval or submitit. A name defined twice is
an error naming both origins, never a silent choice: a plugin that shadowed a built-in would change what
a sweep computes without saying so.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from study.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """Where a name points (``"module:attr"``) and who defined it, for error messages."""

    target: str
    origin: str

    def describe(self) -> str:
        return f"{self.target} ({self.origin})" if self.origin == "built-in" else f"{self.origin} {self.target}"


class Registry(Generic[T]):
    """One kind of named thing (``kind`` is the word used in messages: "method", "executor", ...)."""

    def __init__(self, kind: str, builtin: dict[str, str], group: str | None = None):
        self.kind = kind
        self.group = group
        self._builtin = {name: Entry(target, "built-in") for name, target in builtin.items()}
        self._entries: dict[str, Entry] | None = None
        self._added: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}

    def copy(self) -> "Registry[T]":
        """An independent registry with the same entries (tests scope ``--plugin`` registrations with it)."""
        new: Registry[T] = Registry(self.kind, {}, self.group)
        new._builtin = dict(self._builtin)
        new._entries = None if self._entries is None else dict(self._entries)
        new._added = dict(self._added)
        new._loaded = dict(self._loaded)
        return new

    def _table(self) -> dict[str, Entry]:
        """Built-ins plus the entry-point group, read once (entry points are listed, not imported)."""
        if self._entries is None:
            entries = dict(self._builtin)
            if self.group is not None:
                for ep in entry_points(group=self.group):
                    self._put(entries, ep.name, Entry(ep.value, "entry point"))
            for name, entry in self._added.items():
                self._put(entries, name, entry)
            self._entries = entries
        return self._entries

    def _put(self, entries: dict[str, Entry], name: str, entry: Entry) -> None:
        old = entries.get(name)
        if old is None:
            entries[name] = entry
        elif old.target != entry.target:
            raise UserError(f"{self.kind} {name!r} is defined by {old.describe()} and by {entry.describe()}: "
                            f"rename one of them or uninstall one plugin")

    def add(self, name: str, target: str, origin: str) -> None:
        """Register ``name`` → ``target`` at run time; the same target twice is harmless, another is an error."""
        self._put(self._table(), name, Entry(target, origin))
        self._added[name] = Entry(target, origin)

    def refresh(self) -> None:
        """Read the entry-point group again on next use (a package installed into ``sys.path`` after the first
        lookup, as a test session does), keeping names added at run time and objects already imported."""
        self._entries = None

    def names(self) -> list[str]:
        return sorted(self._table())

    def __contains__(self, name: str) -> bool:
        return name in self._table()

    def entry(self, name: str) -> Entry:
        return self._table()[name]

    def entries(self) -> dict[str, Entry]:
        return dict(self._table())

    def suggest(self, name: str) -> str:
        hint = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        return f"; did you mean {hint[0]!r}?" if hint else ""

    def unknown(self, name: str) -> UserError:
        return UserError(f"unknown {self.kind} {name!r}{self.suggest(name)}: choose one of {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """The object ``name`` points to, imported on first use (``ImportError`` propagates to the caller)."""
        if name not in self._loaded:
            if name not in self:
                raise self.unknown(name)
            self._loaded[name] = load(self.entry(name).target)
        return self._loaded[name]


def load(target: str) -> Any:
    """``"package.module:attr"`` → the attribute (the entry-point value syntax)."""
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj
