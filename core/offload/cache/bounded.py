"""An in-process LRU of bytes, bounded by entry count and total size, each entry with its own expiry.

The first level of every read cache: a hit costs one dict lookup and no await.
Values are bytes so that what is kept here is exactly what the shared store
(Redis, shared memory) keeps, and so that the size bound means something.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class BoundedCache:
    """Least recently used entries go first once either bound would be exceeded."""

    def __init__(self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # One value may take at most this share of the bytes: a single huge answer must not
        # push out hundreds of small ones only to be pushed out itself by the next.
        self.max_value_bytes = max(max_bytes // 8, 1)
        self.clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None if absent or expired (an expired entry is dropped)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, ttl_s: float = math.inf) -> bool:
        """Keep ``value`` for ``ttl_s`` seconds (forever: until evicted); False if it is too large to keep."""
        if ttl_s <= 0 or len(value) > self.max_value_bytes:
            return False
        self._drop(key)
        self._entries[key] = (value, self.clock() + ttl_s)
        self.bytes += len(value) + len(key)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evicted += 1
        return True

    def delete(self, key: str) -> None:
        """Forget ``key`` (nothing if absent)."""
        self._drop(key)

    def clear(self) -> int:
        """Forget everything; the number of entries forgotten."""
        count = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return count

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= len(entry[0]) + len(key)
