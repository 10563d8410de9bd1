"""Peak resident memory of this process, correct in a freshly spawned child.

``getrusage(RUSAGE_SELF).ru_maxrss`` is the wrong tool for a child started by ``subprocess``: Linux keeps the
high-water mark across ``fork`` + ``execve`` (the forked copy of the parent counts), so every child reports
at least the parent's RSS at the time of the fork. ``VmHWM`` in ``/proc/self/status`` belongs to the
process's current address space, which ``execve`` replaces, so it measures the child alone.
"""

from __future__ import annotations

import resource


def peak_rss_mib() -> float:
    """The peak resident set size of this process's address space, in MiB."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort
