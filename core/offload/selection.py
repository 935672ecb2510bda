"""Which server takes a task: eligibility, the local-or-offload rule, the policy, failing open."""

from __future__ import annotations

from collections.abc import Collection

from .errors import OffloadError
from .policies import Policy
from .registry import Pool, Server


def eligible(pool: Pool, exclude: Collection[str] = ()) -> tuple[list[Server], dict[str, str]]:
    """Servers that may take a task now, and why each other one may not."""
    excluded: dict[str, str] = {}
    max_lag = pool.config.max_lag
    # Only pools that care about block lag pay for finding the best height (this runs on every task).
    best_height = (
        max((s.height for s in pool.servers if s.available and s.height is not None), default=None) if max_lag else None
    )
    servers = []
    for server in pool.servers:
        reason = "failed this request already" if server.name in exclude else server.exclusion()
        if reason is None and best_height is not None and server.height is not None:
            behind = best_height - server.height
            if behind > max_lag:
                reason = f"lagging {behind} behind the best known height {best_height}"
        if reason is None:
            servers.append(server)
        else:
            excluded[server.name] = reason
    return servers, excluded


def least_bad(pool: Pool, exclude: Collection[str]) -> Server | None:
    """When every server looks unhealthy, the one most likely to answer anyway."""
    untried = [server for server in pool.servers if server.name not in exclude]
    if not untried:
        return None
    return min(
        untried,
        key=lambda s: (s.probe_ok is False, s.breaker.open_until, s.breaker.consecutive_failures, s.cost.estimate_s),
    )


def no_server_error(pool: Pool, excluded: dict[str, str]) -> OffloadError:
    """503 that says, per server, why it was not chosen."""
    reasons = "; ".join(f"{name}: {why}" for name, why in excluded.items()) or "the pool is empty"
    return OffloadError(503, f"no server available in pool {pool.name!r} ({reasons})", details={"excluded": excluded})


class Choice:
    """A chosen server, whether it was chosen only because nothing healthy was left, and whether
    the local-throughput window already counted it (``counted``: the local server, admitted)."""

    __slots__ = ("counted", "excluded", "fail_open", "server")

    def __init__(
        self,
        server: Server,
        fail_open: bool = False,
        excluded: dict[str, str] | None = None,
        *,
        counted: bool = False,
    ) -> None:
        self.server = server
        self.fail_open = fail_open
        self.excluded = excluded or {}
        self.counted = counted


def local_rule_applies(pool: Pool, requested: str | None, exclude: Collection[str]) -> bool:
    """Whether the next choice may hinge on the local-throughput window (so it is worth asking)."""
    if requested or not pool.config.consider_throughput:
        return False
    local = pool.local_server()
    return local is not None and local.name not in exclude and local.available


def choose(
    pool: Pool,
    policy: Policy,
    local_admitted: bool = False,
    requested: str | None = None,
    exclude: Collection[str] = (),
    *,
    may_trial: bool = False,
) -> Choice:
    """Pick the server for one attempt, or raise a 400/503 :class:`OffloadError` saying why.

    ``local_admitted`` is the local-throughput window's verdict for this task
    (the device took at most ``expected_throughput`` requests in the window,
    and this one was counted): the local server takes it when it can.
    With ``may_trial`` (the task can be retried elsewhere if it fails), a
    server whose circuit is half-open gets this request as its trial: that is
    how an ejected server earns its way back.
    """
    if requested:
        server = pool.find(requested)
        if server is None:
            names = ", ".join(f"{s.name} ({s.address})" for s in pool.servers) or "none"
            raise OffloadError(400, f"server {requested!r} is not in pool {pool.name!r}; choose one of: {names}")
        return Choice(server)
    if not pool.servers:
        raise OffloadError(503, f"pool {pool.name!r} has no servers; add some in plugins.toml")
    config = pool.config
    candidates, excluded = eligible(pool, exclude)
    if may_trial:
        trial = next((server for server in candidates if server.awaiting_trial), None)
        if trial is not None:
            return Choice(trial)
    local = pool.local_server()
    if config.consider_throughput and local is not None:
        local_ok = local in candidates
        # The original rule, kept exactly: local while throughput <= expected.
        if local_ok and local_admitted:
            return Choice(local, counted=True)
        remote = [server for server in candidates if not server.local]
        if remote:
            return Choice(policy.choose(remote))
        if local_ok:  # over the limit but nobody else can take it: slow beats lost
            return Choice(local)
    elif candidates:
        return Choice(policy.choose(candidates))
    # Nothing looks healthy: try the least bad rather than refuse at once.
    fallback = least_bad(pool, exclude)
    if fallback is None:
        raise no_server_error(pool, excluded)
    return Choice(fallback, fail_open=True, excluded=excluded)
