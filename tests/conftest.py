"""Shared test set-up: offline, caches in temporary directories, fixtures auto-loaded from tests/fixtures/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.gettempdir()) / "merge-study-test-cache"
for var, sub in [("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"), ("XDG_CACHE_HOME", "xdg")]:
    os.environ.setdefault(var, str(_CACHE / sub))
for var in ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"]:
    os.environ[var] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = sorted(
    f"fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py") if p.stem != "__init__"
)
