"""A worker's first cell runs without cyclic collection; afterwards the collector is back on, the warm-up's
garbage is freed (not frozen) and its survivors are frozen. Runs in a fresh interpreter: the policy is once
per process and would otherwise freeze pytest's own heap."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, weakref
    from study.gcpolicy import warm_up

    class Node:
        pass

    assert gc.isenabled() and gc.get_freeze_count() == 0
    with warm_up():
        assert not gc.isenabled()
        garbage = Node(); garbage.me = garbage          # a cycle only the collector can free
        dead = weakref.ref(garbage); del garbage
        survivor = Node(); survivor.me = survivor
    assert gc.isenabled()
    assert dead() is None, "warm-up garbage was frozen instead of collected"
    assert gc.get_freeze_count() > 0
    with warm_up():                                      # once per process
        assert gc.isenabled()
    try:
        with warm_up():
            raise KeyError("cell failed")
    except KeyError:
        pass
    assert gc.isenabled()
    print("ok")
""")

FAILING_FIRST_CELL = textwrap.dedent("""
    import gc
    from study.gcpolicy import warm_up
    try:
        with warm_up():
            raise RuntimeError("first cell failed")
    except RuntimeError:
        pass
    assert gc.isenabled() and gc.get_freeze_count() > 0
    print("ok")
""")


def run(script: str) -> str:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_first_cell_without_collection_then_frozen():
    assert run(SCRIPT) == "ok"


def test_collector_is_back_on_when_the_first_cell_raises():
    assert run(FAILING_FIRST_CELL) == "ok"
