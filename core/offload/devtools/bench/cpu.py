"""What a contender costs the machine: CPU seconds and resident memory, read from /proc."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["group_cpu_seconds", "rss_kb"]

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group ``pgid``.

    A contender's cost is its whole group: nginx's workers, a gateway's worker processes.
    """
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name may hold spaces and parentheses: fields are counted after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS_PER_SECOND


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
