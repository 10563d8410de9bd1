"""Errors meant for people.

A ``UserError`` is a problem with the user's input (a sweep file, a checkpoint, a flag). The CLI prints its
message as one line and exits with status 2, without a traceback unless ``--verbose``; anything else is a bug
or an environment failure and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input: one line that names the thing, what was expected, what was found, and what to do."""

    exit_code = 2


class ConfigError(UserError):
    """A sweep file that does not parse or validate; the message carries the file and the YAML path."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or incompatible with its base."""


class MethodError(UserError):
    """An unknown method name or a parameter outside the method's schema."""


class NotApplicable(Exception):
    """A method that does not apply to a cell (``slerp`` at k != 2, ``model_stock`` at k = 1).

    Not a failure: the cell is recorded as not applicable and skipped.
    """


class MergeInputError(UserError):
    """A tensor that cannot be merged: missing in a checkpoint, a shape mismatch, a non-finite value."""
