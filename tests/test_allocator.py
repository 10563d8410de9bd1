"""The malloc tuning is applied once and reports whether glibc took it (it does on the Linux CI machine)."""

import sys

import pytest

from study import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_glibc_accepts_the_settings_once():
    assert allocator.tune_for_streaming() is True
    assert allocator.tune_for_streaming() is True  # idempotent: applied once, answer remembered
    assert allocator.TRIM_THRESHOLD < 2**31 and allocator.MMAP_THRESHOLD_MAX < 2**31  # mallopt takes an int
