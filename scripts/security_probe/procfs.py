"""What /proc says about a process: alive, how it ended, RSS, open files, command line."""

from __future__ import annotations

import os
import signal


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_alive(pid: int | None) -> bool | None:
    """True/False from /proc (a zombie, e.g. a crashed child nobody reaped yet, counts as dead); None: no PID."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except OSError:
        return False
    return True


def how_it_ended(pid: int | None) -> str:
    """ "killed by SIGSEGV" / "exited with 1" for a zombie (/proc/PID/stat field 52), else "gone"."""
    if pid is None:
        return "(no PID)"
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        code = int(fields[49])  # field 52, exit_code, counted from field 3 (state)
    except (OSError, IndexError, ValueError):
        return "(exited and reaped)"
    if code & 0x7F:
        try:
            name = signal.Signals(code & 0x7F).name
        except ValueError:
            name = f"signal {code & 0x7F}"
        return f"(killed by {name}{', core dumped' if code & 0x80 else ''})"
    return f"(exited with {code >> 8})"


def open_files_limit(pid: int | None) -> str:
    if pid is None:
        return "n/a"
    try:
        with open(f"/proc/{pid}/limits") as limits:
            for line in limits:
                if line.startswith("Max open files"):
                    soft, hard = line.split()[3:5]
                    return f"{soft} (hard {hard})"
    except OSError:
        pass
    return "unknown"


def open_fd_count(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []
