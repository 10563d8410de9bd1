"""Where a merged model directory may be written, and how it gets there without losing anyone's data.

A merge writes into a hidden sibling of its output and renames it into place at the end, so a failed or
interrupted merge leaves nothing behind (not even the parent directories it created). The output may not be,
lie inside, or contain any input (symlinks resolved): a merge must never write into a checkpoint or delete
one. An existing output is replaced only on request (``force``) and only when it is a directory that a merge
wrote (it holds ``MARKER``) and holds nothing else: never an arbitrary directory.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterable

from study.errors import UserError

MARKER = "merge_study.json"
"""Written into every merged directory: what was merged from what, and the sign that ``force`` may replace it."""

MODEL_FILES = (
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
"""What a merged directory copies from its base besides the weights (so Auto classes load it)."""

WEIGHT_FILES = re.compile(r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json")


def check_output(out: Path, inputs: Iterable[Path], *, force: bool = False, also: Iterable[str] = ()) -> Path:
    """The resolved output directory, or a ``UserError`` when writing there could lose data.

    A previous merge output that holds anything a merge does not write (nor ``also``, the files a caller adds
    to a merge, e.g. ``export``'s model card) is refused even with ``force``: replacing it would delete that file.
    """
    target = Path(out).expanduser().resolve()
    for src in inputs:
        src = Path(src).expanduser().resolve()
        relation = ("is the input" if target == src else "lies inside the input" if src in target.parents
                    else "contains the input" if target in src.parents else None)
        if relation:
            raise UserError(f"output {out} {relation} {src}: a merge never writes into or over its inputs; "
                            f"choose an output directory outside every input")
    if target.exists():
        if not target.is_dir():
            raise UserError(f"output {out} is an existing file: give a directory path that does not exist yet")
        if not (target / MARKER).is_file():
            raise UserError(f"output {out} exists and is not a merge output (no {MARKER}): choose a new directory "
                            f"(--force replaces only a previous merge)")
        if not force:
            raise UserError(f"output {out} holds a previous merge: pass --force to replace it, or choose a new "
                            f"directory")
        allowed = {MARKER, *MODEL_FILES, *also}
        foreign = sorted(p.name for p in target.iterdir()
                         if not (p.is_file() and (p.name in allowed or WEIGHT_FILES.fullmatch(p.name))))
        if foreign:
            raise UserError(f"output {out} is a previous merge but also holds {', '.join(foreign[:3])}, which a "
                            f"merge does not write: move it away or choose a new directory")
    ancestor = next(p for p in target.parents if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"output {out}: cannot create it under {ancestor} (not a writable directory)")
    return target


class Staging:
    """A hidden directory beside ``target`` to write into; ``commit`` renames it into place.

    Used as a context manager: leaving the block without ``commit`` (an error, Ctrl-C) removes the staging
    directory and any parent directory it had to create.
    """

    def __init__(self, target: Path):
        self.target = target
        self.created = [p for p in target.parents if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target.parent / f".{target.name}.merging-{os.getpid()}-{secrets.token_hex(4)}"
        self.path.mkdir()  # not mkdtemp: its 0700 would ignore the umask that the output should respect

    def __enter__(self) -> "Staging":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.created:  # deepest first; only ours, and only while empty
                try:
                    parent.rmdir()
                except OSError:
                    break

    def write_marker(self, record: dict[str, Any]) -> None:
        (self.path / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")

    def match_marker_mode(self, names: Iterable[str]) -> None:
        """Give ``names`` the marker's permissions: safetensors creates its files 0600 whatever the umask,
        while the marker, like the copied config and tokenizer files, follows it."""
        mode = (self.path / MARKER).stat().st_mode & 0o777
        for name in names:
            os.chmod(self.path / name, mode)

    def commit(self) -> None:
        """Rename into place; a previous merge output there (already checked) is swapped out, then removed."""
        if not self.target.exists():
            os.rename(self.path, self.target)
            return
        old = self.target.parent / f".{self.target.name}.replaced-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(self.target, old)
        try:
            os.rename(self.path, self.target)
        except BaseException:
            os.rename(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)
