"""A serving process of ``offload serve``: a SIGTERM/SIGINT that lands during startup is not lost.

Sanic stops a serving process with ``app.stop()`` from a handler it puts on the
event loop, in its runner's ``_setup_system_signals``, just before the
``after_server_start`` phase. Measured with ``offload serve --port 0`` and a
SIGTERM sent as soon as ``/health`` answers: between one signal in ten and one
in two was lost, and the process served on until a second signal. The loop
already answers requests before that phase, and Sanic runs it once per startup
phase, then once to serve:

* a signal that lands between two runs is noted by uvloop but only acted on
  when more signal data wakes the loop, that is not before a second signal;
* a signal that lands while Sanic swaps its handlers in is ignored (it sets
  ``SIG_IGN`` first, which also discards a signal held pending);
* a stop made during the ``after_server_start`` run stops that run only: its
  stop merges with the one the run ends with, and the serving run starts anyway.

Holding the signals (blocked) across the swap still lost one in a loaded CI run:
one that arrived while the socket opened was discarded by the swap. So the swap
itself is skipped for the apps given to :func:`stop_reliably_on_signals`:
from ``before_server_start`` on, the two signals go to a plain ``signal.signal``
handler, which runs at the next bytecode whether the loop runs or not and queues
the stop on the loop. The stop waits for the serving run
(``app.state.is_running``) and calls ``app.stop()`` once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Any

from sanic import Sanic
from sanic.server import runners as sanic_runners

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often a stop that landed during startup looks again for the serving run.
STARTUP_RECHECK_S = 0.05
# Set on app.ctx for an app whose serving processes stop through ServingStopper.
OWN_HANDLERS_FLAG = "offload_stop_signals"


class ServingStopper:
    """Turns SIGTERM/SIGINT into exactly one ``app.stop()``, made during the serving run."""

    def __init__(self, app: Sanic, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop
        self.requested = False
        self.issued = False
        self.stopping = False  # set by before_server_stop: the serving run is over, by our stop or another

    def on_signal(self, signum: int, frame: Any) -> None:
        """The signal handler: queue the stop on the loop (it runs when the loop next runs)."""
        if self.requested or self.loop.is_closed():
            return  # a stop is under way; Sanic's graceful timeout bounds it
        self.requested = True
        self.loop.call_soon_threadsafe(self.stop_when_serving)

    def stop_when_serving(self) -> None:
        """Stop the serving run; while startup still runs, look again shortly (timers outlive a run)."""
        if self.issued or self.stopping:
            return
        if not self.app.state.is_running:
            self.loop.call_later(STARTUP_RECHECK_S, self.stop_when_serving)
            return
        self.issued = True
        self.app.stop(terminate=False)


def keep_own_handlers_through_sanic_startup() -> bool:
    """Make Sanic's runner leave SIGTERM/SIGINT alone for flagged apps (once per process); False if it cannot."""
    sanic_setup = getattr(sanic_runners, "_setup_system_signals", None)
    if sanic_setup is None:
        log.warning("this Sanic has no _setup_system_signals: a SIGTERM during startup may be lost")
        return False
    if getattr(sanic_setup, "offload_wrapped", False):
        return True

    def setup_system_signals(app: Sanic, run_multiple: bool, register_sys_signals: bool, loop: Any) -> None:
        if getattr(app.ctx, OWN_HANDLERS_FLAG, False) and threading.current_thread() is threading.main_thread():
            os.environ["SANIC_WORKER_PROCESS"] = "true"  # the one other thing Sanic's version does
            return
        sanic_setup(app, run_multiple, register_sys_signals, loop)

    setup_system_signals.offload_wrapped = True  # type: ignore[attr-defined]
    sanic_runners._setup_system_signals = setup_system_signals
    return True


def stop_reliably_on_signals(app: Sanic) -> None:
    """Make every process serving ``app`` stop on its first SIGTERM/SIGINT through :class:`ServingStopper`.

    Only where the server runs in the main thread (``offload serve``, each
    worker of ``--workers N``); a server run in another thread keeps Sanic's
    handlers.
    """
    if not keep_own_handlers_through_sanic_startup():
        return
    previous: dict[int, Any] = {}
    stoppers: list[ServingStopper] = []

    async def install(app: Sanic) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        setattr(app.ctx, OWN_HANDLERS_FLAG, True)
        stopper = ServingStopper(app, asyncio.get_running_loop())
        stoppers.append(stopper)
        for stop in STOP_SIGNALS:
            previous[stop] = signal.signal(stop, stopper.on_signal)

    async def mark_stopping(app: Sanic) -> None:
        for stopper in stoppers:
            stopper.stopping = True

    async def give_back(app: Sanic) -> None:
        # Once the loop is closed a late signal must find the handler it found before serving.
        for stop, handler in previous.items():
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)
        previous.clear()

    app.register_listener(install, "before_server_start")
    app.register_listener(mark_stopping, "before_server_stop")
    app.register_listener(give_back, "after_server_stop")
