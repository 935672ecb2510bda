"""prometheus-client's multiprocess mode for ``offload serve --workers N``.

Each worker writes its counters into files in one directory
(``PROMETHEUS_MULTIPROC_DIR``) and a scrape, whichever worker answers it, sums
them: requests are counted once for the gateway, not per worker. prometheus-client
reads the variable when it is first imported, so the main process sets it before
any worker starts (workers are spawned: they import everything afresh and
inherit the environment). This module imports nothing of prometheus-client at
import time for the same reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# prometheus-client's files for gauges of live processes only: gauge_livesum_<pid>.db and the like.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh directory for the workers' metric files, named in the environment while the block runs.

    Fresh each time: files left by an earlier run would add its counts to this one's.
    The directory and the previous value of the variable are restored at exit.
    """
    previous = os.environ.get(MULTIPROC_ENV)
    path = tempfile.mkdtemp(prefix="offload-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def remove_at_main_process_stop(app: Any, path: str) -> None:
    """Also remove ``path`` from Sanic's ``main_process_stop``: Sanic may end the main process with
    ``os._exit``, which skips the ``finally`` of :func:`metrics_directory`."""

    async def remove(app: Any) -> None:
        shutil.rmtree(path, ignore_errors=True)

    app.register_listener(remove, "main_process_stop")


def multiprocess_directory() -> str | None:
    """The multiprocess directory this process writes to, if one is set and exists."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process now has that number: not ours to judge, keep it
    return True


def mark_dead_workers(path: str) -> list[int]:
    """Drop the live gauges (in-flight) of processes that exited; returns their PIDs.

    A worker that crashed never says so, and its last in-flight count would be
    summed for ever: whichever process scrapes checks the PIDs first.
    """
    from prometheus_client import multiprocess

    dead: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(path):
            match = _LIVE_GAUGE_FILE.fullmatch(name)
            if match and not _alive(int(match.group(1))):
                dead.add(int(match.group(1)))
    for pid in dead:
        # Two workers scraping at once may both remove the same file.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def mark_this_process_dead(path: str) -> None:
    """A worker stopping cleanly withdraws its live gauges at once."""
    from prometheus_client import multiprocess

    with contextlib.suppress(FileNotFoundError):
        multiprocess.mark_process_dead(os.getpid(), path)
