"""A wall-clock limit for EVM execution: py-evm has none, geth stops a call after ``rpc.evmtimeout``.

The embedded chain runs one request at a time, so a call that loops until out of gas
(30 million gas is several seconds in py-evm) or feeds a pure-Python precompile a huge
input (BLAKE2 ``F`` with millions of rounds, hundreds of curve pairings: minutes) holds
every other caller. Inside :func:`execution_deadline`, such execution is stopped once
the deadline passes by raising :class:`ExecutionTimeout` from within py-evm:

* every jump (``JUMP``, ``JUMPI``: the only way EVM code loops) and every new call frame
  (``CALL``, ``CREATE``, ... and the top-level message, so also every precompile) checks the
  clock, which costs a fraction of a microsecond where the opcodes themselves cost about one;
* a precompile whose work grows with its input (pairings, multi-scalar multiplications,
  BLAKE2 ``F`` rounds: pure Python, minutes for a large input) is one long computation that never
  returns to the opcode loop, so it runs with a trace function that checks the clock on each
  Python call it makes. That makes those 2 to 3 times slower, which is why the other
  precompiles, fixed work or in C (ecrecover, hashes, modexp, single curve operations:
  under half a second each), are only checked before they start.

:class:`ExecutionTimeout` is not one of py-evm's ``VMError`` s, so py-evm does not record
it as the call's outcome but lets it unwind the whole execution. That is safe for calls
and estimates: they run on a throwaway copy of the state that is never persisted.
Mined transactions are never run under a deadline: they must run to their end.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from types import FrameType
from typing import Any, ClassVar

from eth.abc import ComputationAPI, MessageAPI, StateAPI, TransactionContextAPI
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.computation import PragueComputation
from eth.vm.forks.prague.state import PragueState
from eth.vm.opcode_values import JUMP, JUMPI

__all__ = [
    "WATCHED_PRECOMPILES",
    "DeadlinePragueVM",
    "ExecutionTimeout",
    "YieldPoint",
    "check_deadline",
    "execution_deadline",
]

Precompile = Callable[[ComputationAPI], ComputationAPI]

#: Precompiles (by address) whose running time grows with their input, watched from inside:
#: BN254 pairing, BLAKE2 F, BLS12-381 G1 and G2 multi-scalar multiplication and pairing check.
WATCHED_PRECOMPILES = frozenset({0x08, 0x09, 0x0C, 0x0E, 0x0F})

# Per thread: the chain runs in a worker thread, and only the one that set a deadline may be stopped.
_local = threading.local()


class ExecutionTimeout(Exception):
    """EVM execution passed its deadline and was stopped."""


def _deadline() -> float | None:
    return getattr(_local, "deadline", None)


# How much CPU time a call uses before it gives way to a waiting request (see YieldPoint).
MIN_RUN_BEFORE_YIELD_S = 0.1


class YieldPoint:
    """When calls running on one chain must give way to a request that has waited long enough.

    The chain serves one request at a time. Each request's calls have their own budget, but
    several requests of looping calls in a row would each spend theirs while a view waits
    behind all of them; with a yield point at "the oldest waiter's arrival + one budget", the
    running call (and each queued one) gives way once someone has waited that long and it has
    itself used :data:`MIN_RUN_BEFORE_YIELD_S` of CPU time. ``at`` is set from the event loop and read in the
    worker thread (a float is replaced atomically); None means nobody is waiting.
    """

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: float | None = None


def _expired(deadline: float) -> bool:
    now = time.monotonic()
    if now >= deadline:
        return True
    point = getattr(_local, "yield_point", None)
    give_way = point.at if point is not None else None
    # Only a call that has worked a while gives way: ordinary calls take milliseconds, and under a
    # long queue of them (100 concurrent writes, each estimated) every waiter is "late". Counted in
    # this thread's CPU time, not wall time: a thread starved of the GIL by a busy event loop has
    # done no work, and an estimate stopped for that came back as a spurious timeout.
    return (
        give_way is not None and now >= give_way and time.thread_time() - _local.started_cpu >= MIN_RUN_BEFORE_YIELD_S
    )


def check_deadline() -> None:
    """Raise :class:`ExecutionTimeout` once this thread's deadline (``time.monotonic``) or yield point passed."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and _expired(deadline):
        raise ExecutionTimeout


@contextmanager
def execution_deadline(deadline: float, yield_point: YieldPoint | None = None) -> Iterator[None]:
    """Stop EVM execution in this thread at ``deadline`` (``time.monotonic``), or at ``yield_point``, within the block.

    Nested blocks keep the earlier deadline.
    """
    outer = _deadline()
    outer_point = getattr(_local, "yield_point", None)
    outer_started = getattr(_local, "started_cpu", None)
    _local.deadline = deadline if outer is None else min(outer, deadline)
    _local.yield_point = yield_point or outer_point
    _local.started_cpu = time.thread_time() if outer_started is None else outer_started
    try:
        yield
    finally:
        _local.deadline = outer
        _local.yield_point = outer_point
        _local.started_cpu = outer_started


def _checked_opcode(opcode: Any) -> Any:
    @wraps(opcode)  # keeps ``__wrapped__``, where py-evm's debug logging looks for the mnemonic
    def run(computation: ComputationAPI) -> None:
        check_deadline()
        opcode(computation=computation)

    return run


def _interruptible(precompile: Precompile) -> Precompile:
    # Its call frame already checked the deadline on entry (apply_computation below).
    @wraps(precompile)
    def run(computation: ComputationAPI) -> ComputationAPI:
        deadline = _deadline()
        if deadline is None or sys.gettrace() is not None:
            # No deadline (a mined transaction), or a debugger or coverage tool owns tracing
            # in this thread: run as py-evm would.
            return precompile(computation)

        def on_call(frame: FrameType, event: str, arg: Any) -> None:
            # Only "call" events reach a global trace function that returns None, so this
            # runs once per Python call and never per line. Raising here unwinds the
            # precompile (CPython removes the trace function when it raises).
            if _expired(deadline):
                raise ExecutionTimeout

        sys.settrace(on_call)
        try:
            return precompile(computation)
        finally:
            sys.settrace(None)

    return run


class DeadlinePragueComputation(PragueComputation):
    """Prague's computation, checking the deadline at jumps, call frames and inside the watched precompiles."""

    opcodes: ClassVar[dict[int, Any]] = {
        **PragueComputation.opcodes,
        JUMP: _checked_opcode(PragueComputation.opcodes[JUMP]),
        JUMPI: _checked_opcode(PragueComputation.opcodes[JUMPI]),
    }
    _precompiles: ClassVar[dict[Any, Precompile]] = {
        address: _interruptible(run) if int.from_bytes(address, "big") in WATCHED_PRECOMPILES else run
        for address, run in PragueComputation.get_precompiles().items()
    }

    @classmethod
    def apply_computation(
        cls,
        state: StateAPI,
        message: MessageAPI,
        transaction_context: TransactionContextAPI,
        parent_computation: ComputationAPI | None = None,
    ) -> ComputationAPI:
        """Check the deadline, then run the frame as py-evm does."""
        check_deadline()
        return super().apply_computation(state, message, transaction_context, parent_computation)


#: eth-tester's default VM (Prague) running :class:`DeadlinePragueComputation`.
DeadlinePragueVM = PragueVM.configure(
    __name__="DeadlinePragueVM",
    _state_class=PragueState.configure(__name__="DeadlinePragueState", computation_class=DeadlinePragueComputation),
)
