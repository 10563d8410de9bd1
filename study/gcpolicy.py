"""Python's cyclic garbage collector in a worker: paused while the worker warms up, then told to leave the
warm-up's objects alone.

A worker's first cell imports torch, transformers and lm-eval and builds the model, tokenizer and task
objects: millions of objects that live as long as the process. While they are being made, every full
collection walks all of them again (the threshold grows with the heap, but each walk is longer), and at
interpreter exit one more walk happens. On the sweep bench's five mini-zoo cells (2 cores) that was ~1.2 s of
full collections during start-up, finding a few dozen garbage objects each, and ~1.3 s at exit, of a 14 s
run. So: no cyclic collection during the first cell, then one collection (garbage made during warm-up is
freed, not kept) and ``gc.freeze()``, which moves the survivors out of the collector's sight; objects made
later (each cell's state dict, results, tracebacks of failed cells) are collected as usual. Once per
process: a second sweep in the same process (tests, notebooks) runs with the collector as it finds it.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

_warmed_up = False


@contextmanager
def warm_up() -> Iterator[None]:
    """Run the body (a worker's first cell) without cyclic collection, then freeze what survives it."""
    global _warmed_up
    if _warmed_up or not gc.isenabled():
        yield
        return
    _warmed_up = True
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()
