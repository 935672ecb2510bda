"""Reorg detection: the cache keeps nothing above a checkpoint whose hash is checked every probe round.

The watcher remembers one *checkpoint*: the number and hash of a block at or
below the finalized height (the pool's best probed height minus
``cache_confirmations``). The cache keeps block-bound answers only at or below
it (:meth:`ReorgWatcher.finalized`), so any reorganisation that could make a
kept answer stale changes the checkpoint's hash too (each block's hash covers
its parent's). Every probe round the watcher asks a node for the block at the
checkpoint: a different hash, no such block, or a head below the checkpoint is
a reorg, and the whole cache is invalidated before a new checkpoint is taken.
The checkpoint only moves up once its own hash has been found unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from offload import OffloadError, PluginContext, ReadCache

from .rpc import RpcSender, rpc_payload

log = logging.getLogger("offload.contracts.reorgs")

# Each gateway's watcher by its plugin context, so that the probe hook (which gets only the
# context) can wake it once a round has measured new heights. Weak: a stopped gateway's goes.
_WATCHERS: weakref.WeakValueDictionary[int, ReorgWatcher] = weakref.WeakValueDictionary()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A block believed final: its number and hash."""

    height: int
    block_hash: str


def pool_head(plugin: PluginContext) -> int | None:
    """The highest height the probes saw among the pool's available servers; None before any probe."""
    heights = [server.height for server in plugin.pool().servers if server.available and server.height is not None]
    return max(heights, default=None)


def server_height(plugin: PluginContext, name: str) -> int | None:
    """The latest probed height of the pool's server ``name`` (None if unknown)."""
    for server in plugin.pool().servers:
        if server.name == name:
            return server.height
    return None


def poke(plugin: PluginContext) -> None:
    """A probe round measured ``plugin``'s nodes: let its watcher check the checkpoint (nothing if none)."""
    watcher = _WATCHERS.get(id(plugin))
    if watcher is not None:
        watcher.poke()


class ReorgWatcher:
    """Keeps a checkpoint at or below the finalized height and invalidates the cache when it changes."""

    def __init__(
        self,
        plugin: PluginContext,
        sender: RpcSender,
        confirmations: int,
        *,
        cache: Callable[[], ReadCache] | None = None,
        head: Callable[[], int | None] | None = None,
    ) -> None:
        self.plugin = plugin
        self.sender = sender
        self.confirmations = confirmations
        self._cache = cache or plugin.read_cache
        self._head = head or (lambda: pool_head(plugin))
        self.checkpoint: Checkpoint | None = None
        self.reorgs = 0
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        _WATCHERS[id(plugin)] = self

    def finalized(self) -> int | None:
        """The highest block the cache may keep answers about: the checkpoint, or lower if the head fell."""
        checkpoint = self.checkpoint
        head = self._head()
        if checkpoint is None or head is None:
            return None
        return min(head - self.confirmations, checkpoint.height)

    def poke(self) -> None:
        """Check at the next opportunity (called after each probe round)."""
        self._poked.set()

    def start(self) -> None:
        """Check now, then after every probe round, until :meth:`stop` (inside the server's loop)."""
        if self._task is None or self._task.done():
            self._poked.set()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="offload-contracts-reorgs")

    async def stop(self) -> None:
        """Stop checking (a check in progress is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._poked.wait()
            self._poked.clear()
            try:
                await self.check()
            except Exception:  # one failed check must never end the checks
                log.exception("reorg check failed")

    async def check(self) -> bool:
        """One check: adopt other processes' invalidations, verify the checkpoint, move it up; True on a reorg."""
        cache = self._cache()
        await cache.sync_generation()
        head = self._head()
        if head is None:
            return False
        reorg = await self._verify(cache, head)
        target = head - self.confirmations
        if target >= 0 and (self.checkpoint is None or target > self.checkpoint.height):
            block_hash = await self._hash_at(target)
            if block_hash:  # None: no node answered; "": the node has no such block (yet)
                self.checkpoint = Checkpoint(target, block_hash)
        return reorg

    async def _verify(self, cache: ReadCache, head: int) -> bool:
        """Whether the chain changed at or below the checkpoint (then the cache is invalidated)."""
        checkpoint = self.checkpoint
        if checkpoint is None:
            return False
        if head < checkpoint.height:
            reason = f"the head {head} fell below the checkpoint block {checkpoint.height}"
        else:
            block_hash = await self._hash_at(checkpoint.height)
            if block_hash is None or block_hash == checkpoint.block_hash:
                # None: no node answered this round; the checkpoint stays, and so does its limit on the cache.
                return False
            reason = f"reorg at block {checkpoint.height}: hash {checkpoint.block_hash} is now {block_hash}"
        self.checkpoint = None
        self.reorgs += 1
        self.plugin.count_event("reorg", "detected")
        await cache.invalidate(reason)
        return True

    async def _hash_at(self, height: int) -> str | None:
        """The hash of the block at ``height`` on a node of the pool: "" if it has none, None if none answered."""
        try:
            response, _ = await self.sender.send(
                rpc_payload("eth_getBlockByNumber", [hex(height), False]), idempotent=True, use_pin=False
            )
        except OffloadError as exc:
            log.debug("reorg check: no block %d: %s", height, exc.message)
            return None
        result: Any = response.get("result") if isinstance(response, dict) else None
        if result is None:
            # The node has no such block: below the head it had, the chain it had is gone.
            return "" if isinstance(response, dict) and "error" not in response else None
        block_hash = result.get("hash") if isinstance(result, dict) else None
        return block_hash.lower() if isinstance(block_hash, str) else None


def watch(watcher: ReorgWatcher) -> tuple[Callable[[Any], Awaitable[None]], Callable[[Any], Awaitable[None]]]:
    """Sanic listeners (plain functions: Sanic ignores bound methods) that start and stop ``watcher``."""

    async def start_watching(app: Any) -> None:
        """The gateway serves: check the checkpoint after every probe round."""
        watcher.start()

    async def stop_watching(app: Any) -> None:
        """The gateway is stopping: stop checking."""
        await watcher.stop()

    return start_watching, stop_watching
