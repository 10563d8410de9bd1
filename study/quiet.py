"""Progress bars that libraries print on their own, switched off where they would cut through the sweep's bar.

transformers prints "Loading weights" for every ``from_pretrained`` and ``datasets`` prints "Generating test
split" for every task it reads; a sweep loads models and builds tasks inside its own rich progress bar, so
each of those lines breaks it. Both switches are restored afterwards, so a notebook that uses the harness
keeps its bars.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def no_loading_bar() -> Iterator[None]:
    """Without transformers' "Loading weights" bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def no_dataset_bars() -> Iterator[None]:
    """Without ``datasets``' bars ("Generating test split", "Map")."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def transformers_errors_only() -> Iterator[None]:
    """transformers' warnings silenced, its errors kept: mergekit sets ``torch_dtype`` on an output config, which
    transformers answers with a deprecation warning on stderr, noise that would break the one-line error contract."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
