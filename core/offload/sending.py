"""One HTTP attempt at one server: send, measure, and classify what went wrong.

Every outcome is written to the server's state (latency, circuit, failures),
and every failure becomes an :class:`AttemptFailed` that says whether trying
elsewhere could help.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from . import safe_json
from .errors import OffloadError
from .registry import Pool, Server
from .request_ids import with_request_id
from .tasks import Task
from .transports.base import InvalidRequest, Transport, UpstreamAnswerRefused, UpstreamUnreachable

# Bytes of an upstream's error body quoted back to the caller.
ERROR_BODY_EXCERPT = 200


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 0.4 µs more to make, on every request
class Attempt:
    """One answered attempt: who answered, with what status and (decoded) data, in how long."""

    server: Server
    status: int
    data: Any
    elapsed_s: float


class AttemptFailed(OffloadError):
    """An attempt failed in a way another server might not (refused, timed out, 5xx).

    ``never_arrived`` (see :class:`OffloadError`) marks a connection that could
    not even be opened: trying elsewhere costs no upstream anything and spends
    no retry budget.
    """


async def send_once(
    client: Transport, pool: Pool, target: Server, task: Task, timeout_s: float, *, movable: bool = False
) -> Attempt:
    """One HTTP call; returns the :class:`Attempt` or raises :class:`AttemptFailed`.

    A ``movable`` attempt (one the engine may retry elsewhere) is abandoned when
    its server is found hung (see :mod:`offload.stalls`): it fails at once
    instead of waiting out ``timeout_s``.
    """
    sent = time.perf_counter()
    if not target.inflight:
        target.last_progress = sent  # quiet since now, not since its last answer long ago
    target.inflight += 1
    concurrency = target.inflight  # what this request shares the server with, itself included
    target.requests += 1
    target.breaker.on_dispatch()
    attempt = asyncio.current_task() if movable else None
    if attempt is not None:
        target.attempts.running.add(attempt)
    try:
        reply = await client.request(target.url, with_request_id(task), timeout_s)
    except TimeoutError:
        reason = f"timed out after {duration(timeout_s)}"
        target.record_failure(reason, may_open=pool.may_eject(target))
        message = f"{described(target)} did not answer within {duration(timeout_s)}"
        raise AttemptFailed(504, message, server=target.name) from None
    except InvalidRequest as exc:
        # Nothing was sent, and no server would take it: the task itself is wrong.
        target.breaker.trial_in_flight = False
        raise OffloadError(400, f"the task cannot be sent: {exc}") from None
    except UpstreamAnswerRefused as exc:
        # It answered, but nothing we may pass on (too large, not HTTP, a 101): a failure, not proof of death.
        reason = f"answer refused: {exc}"
        target.record_failure(reason, may_open=pool.may_eject(target))
        raise AttemptFailed(502, f"{described(target)}: {reason}", server=target.name) from None
    except UpstreamUnreachable as exc:
        reason = f"unreachable: {exc}"
        # A refused or dropped connection is proof enough: eject now, not after N more users hit it.
        target.record_failure(reason, may_open=pool.may_eject(target), immediate=True)
        message = f"{described(target)} is {reason}"
        raise AttemptFailed(502, message, server=target.name, never_arrived=exc.never_arrived) from None
    except asyncio.CancelledError:
        # A hedge lost the race, or the server was found hung: its half-open trial is free again.
        target.breaker.trial_in_flight = False
        if attempt is None or not target.attempts.was_abandoned(attempt):
            raise
        target.record_failure(f"stalled: {target.attempts.reason}", may_open=pool.may_eject(target))
        raise AttemptFailed(
            504, f"{described(target)} stopped answering: {target.attempts.reason}", server=target.name
        ) from None
    finally:
        target.inflight -= 1
        if attempt is not None:
            target.attempts.running.discard(attempt)
            # Abandoned, yet the cancellation never reached here (a client swallowed it): do not keep the task.
            target.attempts.abandoned.discard(attempt)
    finished = time.perf_counter()
    target.last_progress = finished
    status = reply.status
    elapsed = finished - sent
    text = reply.body.decode("utf-8", errors="replace")
    if status >= 500:
        target.record_failure(f"HTTP {status}", may_open=pool.may_eject(target))
        raise AttemptFailed(
            502,
            f"{described(target)} failed with HTTP {status}: {text[:ERROR_BODY_EXCERPT]}",
            server=target.name,
            details={"upstream_status": status},
        )
    target.record_success(elapsed, concurrency)
    return Attempt(target, status, decode_body(text, reply.content_type == "application/json"), elapsed)


def described(target: Server) -> str:
    """How error messages name a server: ``server 'edge1' (http://127.0.0.1:5001)``."""
    return f"server {target.name!r} ({target.url})"


def duration(value: float) -> str:
    """A time for people: 2.0 -> "2 s", 0.0031 -> "3.1 ms" (what was left of a deadline can be tiny)."""
    return f"{seconds(value)} s" if value >= 0.01 else f"{value * 1000:.1f} ms"


def seconds(value: float) -> str:
    """Seconds for people: 0.0999 -> "0.1", 2.0 -> "2"."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def decode_body(text: str, is_json: bool) -> Any:
    """JSON bodies become values; everything else stays text, as the original returned it.

    ``text`` is the answer's decoded body; a JSON answer nested too deep, or not
    standard JSON, is passed on as its text.
    """
    if is_json:
        try:
            return safe_json.loads(text)
        except ValueError:
            return text
    return text
