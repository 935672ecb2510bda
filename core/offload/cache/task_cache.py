"""Which tasks may share an answer, and the answer as the cache keeps it.

A task marked cacheable (``Task.cache_ttl_s``) is keyed by everything that
goes to the server (method, path, query, headers, body) and by the server the caller
pinned, if any: two tasks with the same key are the same question. Only a 200
answer is kept; every other answer reaches the callers waiting at that moment
and nobody after them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from urllib.parse import urlencode

from ..tasks import OffloadResult, Task


def cacheable(task: Task, exclude: Collection[str]) -> bool:
    """Whether ``task`` may be answered from the cache (a caller excluding servers wants a new answer)."""
    return bool(task.cache_ttl_s) and task.cache_ttl_s > 0 and task.idempotent and not exclude  # type: ignore[operator]


def task_key(task: Task, server: str | None) -> str:
    """The cache key of ``task`` sent to ``server`` (None: wherever the engine picks)."""
    body = task.body if task.body is not None else b"" if task.json is None else json.dumps(task.json).encode()
    query = urlencode(sorted(task.params.items())) if task.params else ""
    headers = json.dumps(sorted(task.headers.items())) if task.headers else ""
    digest = hashlib.blake2b(body + headers.encode(), digest_size=16).hexdigest() if body or headers else ""
    return f"task:{task.method}:{task.path}?{query}:{digest}:{server or ''}"


def encode_result(result: OffloadResult) -> bytes:
    """What a later hit needs of ``result``: its data, the server that computed it and its status."""
    return json.dumps([result.data, result.server, result.status_code], separators=(",", ":")).encode()


def decode_result(kept: bytes, throughput: int, elapsed_s: float) -> OffloadResult:
    """A hit: the kept answer, with this request's throughput and time."""
    data, server, status = json.loads(kept)
    return OffloadResult(data, server, status, throughput, elapsed_s, cache="hit")
