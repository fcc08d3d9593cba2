"""CPU time of another process, for benchmarks that report CPU per item beside wall-clock rates:
on a shared machine wall time moves with other jobs' load, a process's CPU time much less."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Context switches of a live process so far, all its threads (Linux /proc; 0 elsewhere).

    In a threaded Python server each GIL hand-off between request threads is a few of them, so
    their count per request follows how often a request releases the GIL, and moves far less
    between runs on a shared machine than CPU time does.
    """
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total
