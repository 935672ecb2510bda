"""Set-up run in each process-pool worker.

Kept apart from ``pool.py`` so workers import neither Sanic nor the app.
"""

from __future__ import annotations

import signal


def init_worker() -> None:
    """Ignore SIGINT in pool workers.

    Ctrl-C reaches the whole foreground process group; the server handles it and
    shuts the pool down in order, so workers dying on their own would only print
    KeyboardInterrupt tracebacks and break in-flight tasks.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
