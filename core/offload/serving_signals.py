"""A serving process of ``offload serve``: a SIGTERM/SIGINT that lands during startup is not lost.

Sanic stops a serving process with ``app.stop()`` from a handler it puts on the
event loop just before the ``after_server_start`` phase. Measured with
``offload serve --port 0`` and a SIGTERM sent as soon as ``/health`` answers:
between one signal in ten and one in two was lost, and the process served on
until a second signal. The loop already answers requests before that phase, and
Sanic runs it once per startup phase, then once to serve:

* a signal that lands between two runs is noted by uvloop but only acted on
  when more signal data wakes the loop, that is not before a second signal;
* a signal that lands while Sanic swaps its handlers in is ignored;
* a stop made during the ``after_server_start`` run stops that run only: its
  stop merges with the one the run ends with, and the serving run starts anyway.

So from ``before_server_start`` on the two signals go to a plain
``signal.signal`` handler (it runs at the next bytecode whether the loop runs or
not) that queues the stop on the loop, and they are held (blocked, so kept
pending) from then until Sanic's swap is undone in ``after_server_start``. The
stop waits for the serving run (``app.state.is_running``) and calls
``app.stop()`` once.

Left: a signal that lands while the listening socket is being opened (before
any request can be answered) is still dropped by Sanic's swap, which discards a
pending signal it ignores.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

from sanic import Sanic

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How often a stop that landed during startup looks again for the serving run.
STARTUP_RECHECK_S = 0.05


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


def stop_reliably_on_signals(app: Sanic) -> None:
    """Make every process serving ``app`` stop on its first SIGTERM/SIGINT through :class:`ServingStopper`.

    Only where the server runs in the main thread (``offload serve``, each
    worker of ``--workers N``); a server run in another thread keeps Sanic's
    handlers.
    """
    previous: dict[int, Any] = {}
    stoppers: list[ServingStopper] = []

    def in_main_thread() -> bool:
        return threading.current_thread() is threading.main_thread()

    def install(take_from_loop: bool) -> None:
        loop = asyncio.get_running_loop()
        if not stoppers:
            stoppers.append(ServingStopper(app, loop))
        for stop in STOP_SIGNALS:
            if take_from_loop:
                loop.remove_signal_handler(stop)  # Sanic's, through the loop
            previous.setdefault(stop, signal.signal(stop, stoppers[0].on_signal))

    async def before_listening(app: Sanic) -> None:
        if in_main_thread():
            install(take_from_loop=False)
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # held until Sanic's swap is undone

    async def take_over(app: Sanic) -> None:
        if in_main_thread():
            install(take_from_loop=True)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one held meanwhile arrives now

    async def mark_stopping(app: Sanic) -> None:
        for stopper in stoppers:
            stopper.stopping = True

    async def give_back(app: Sanic) -> None:
        # Once the loop is closed a late signal must find the handler it found before serving.
        for stop, handler in previous.items():
            signal.signal(stop, handler if handler is not None else signal.SIG_DFL)
        previous.clear()

    app.register_listener(before_listening, "before_server_start")
    app.register_listener(take_over, "after_server_start")
    app.register_listener(mark_stopping, "before_server_stop")
    app.register_listener(give_back, "after_server_stop")
