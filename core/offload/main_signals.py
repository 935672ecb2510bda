"""The main process of ``offload serve --workers N``: stop on SIGTERM/SIGINT without a deadlock.

Sanic's worker manager handles these signals in the main thread, inside the
signal handler, and its shutdown writes the workers' state through a
multiprocessing manager proxy. Two ways that hangs the main process until it is
killed (measured: about one SIGTERM in five):

* the signal lands while the main thread is itself in the middle of a proxy call
  (it polls that state every 0.1 s): the handler's call and the interrupted one
  share one connection, and the interrupted call waits for an answer that never
  comes;
* the signal lands while a worker is still starting: the worker is terminated
  before it acknowledges its start, and the manager waits for that
  acknowledgement for ever (it keeps re-reading its own stop message).

So the manager's own handler runs on a thread of its own (proxies keep one
connection per thread: nothing is shared), and only once the manager has seen
every worker start, that is once its ``wait_for_ack`` has returned (bounded by
:data:`STARTUP_WAIT_S`): stopping after the acknowledgements are recorded but
before the manager has read them still left it waiting.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from sanic import Sanic

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Longest a stop waits for workers still starting (a worker that never starts is Sanic's to report).
STARTUP_WAIT_S = 30.0


class MainProcessStopper:
    """Passes SIGTERM/SIGINT to Sanic's worker manager from a thread, once the manager has seen the workers start."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.started = threading.Event()
        self._lock = threading.Lock()
        self._pending = False
        wait_for_ack = manager.wait_for_ack

        def wait_then_tell() -> None:
            try:
                wait_for_ack()
            finally:
                self.started.set()

        # The manager's monitor loop calls this first; the instance attribute wraps Sanic's method.
        manager.wait_for_ack = wait_then_tell

    def on_signal(self, signum: int, frame: Any) -> None:
        """The signal handler: start the stop off the main thread (a stop already waiting absorbs repeats)."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        threading.Thread(target=self._stop, args=(signum,), name="offload-shutdown", daemon=True).start()

    def _stop(self, signum: int) -> None:
        self.started.wait(STARTUP_WAIT_S)
        with self._lock:
            # From here a further signal is Sanic's "stop interrupted: kill", as without us.
            self._pending = False
        self.manager.shutdown_signal(signum, None)


def stop_off_the_signal_handler(app: Sanic) -> None:
    """Make the main process of ``app`` (served by ``Sanic.serve``) stop through :class:`MainProcessStopper`."""

    async def take_over(app: Sanic) -> None:
        stopper = MainProcessStopper(app.manager)  # made, handlers and all, just before main_process_ready
        for stop in STOP_SIGNALS:
            signal.signal(stop, stopper.on_signal)

    app.register_listener(take_over, "main_process_ready")
