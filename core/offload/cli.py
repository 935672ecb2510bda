"""The ``offload`` command: serve, reload, demo, plugins, validate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from sanic import Sanic

from . import __version__
from .errors import ConfigError
from .settings import Settings, load_settings

CONFIG_ENV = "OFFLOAD_CONFIG"
DEFAULT_CONFIG = "plugins.toml"


def config_path(value: str | None) -> Path:
    """--config, else $OFFLOAD_CONFIG, else ./plugins.toml."""
    return Path(value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def build_gateway(
    config: str,
    workers: int,
    host: str | None = None,
    overrides: tuple[tuple[str, object], ...] = (),
    log_format: str = "text",
) -> Sanic:
    """App factory for ``offload serve``; each worker process calls it (so it must be importable).

    ``overrides`` are ``[gateway]`` settings given on the command line (a tuple, so it pickles).
    """
    from .app import create_app
    from .collector import freeze_after_startup
    from .connections import client_connection_cap, raise_descriptor_limit
    from .reload import install_reload_signal
    from .serving_signals import stop_reliably_on_signals

    settings = load_settings(config, dict(overrides))
    app = create_app(settings, name="offload_gateway", workers=workers, bind_host=host)
    configure_logging(log_format)  # again: creating a Sanic app resets Sanic's loggers
    install_reload_signal(app, config, overrides)  # SIGHUP re-reads plugins.toml (offload reload sends it)
    stop_reliably_on_signals(app)  # Sanic's own handlers can lose a SIGTERM that lands during startup
    freeze_after_startup(app)  # full garbage collections would rescan every startup object (30 ms pauses)
    # Client connections must never use up the descriptors upstream connections need.
    app.ctx.max_client_connections = client_connection_cap(app.ctx.max_client_connections, raise_descriptor_limit())
    return app


def refuse_exposure(host: str, settings: Settings) -> None:
    """Listening beyond loopback without an operator token would hand the local network every write."""
    from .app import settings_dir
    from .security import TOKEN_ENV, is_loopback_host, load_api_token

    if is_loopback_host(host):
        return
    if load_api_token(settings.gateway.api_token_file, settings_dir(settings)) is None:
        raise ConfigError(
            f"refusing to listen on {host}: beyond loopback the gateway needs an operator token; "
            f"set {TOKEN_ENV} or [gateway] api_token_file (and list the names callers use in [gateway] allowed_hosts)"
        )


def configure_logging(log_format: str = "text") -> None:
    """Log lines on stderr, each with its request id; ``json``: every line one JSON object (see offload.log_format)."""
    from .log_format import configure

    configure(log_format)


def free_port_on(host: str) -> int:
    """A port free on ``host`` now (bound and released: another process could take it, rarely)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}: {exc.strerror or exc}") from None


def gateway_overrides(args: argparse.Namespace) -> tuple[tuple[str, object], ...]:
    """``[gateway]`` settings replaced by ``offload serve`` options."""
    overrides: list[tuple[str, object]] = []
    if args.state is not None:
        overrides.append(("state", args.state))
    if args.replica is not None:
        overrides.append(("replica", args.replica))
    if args.start_degraded:
        overrides.append(("state_required", False))
    return tuple(overrides)


def check_state_store(settings: Settings, workers: int) -> None:
    """A Redis URL that does not answer stops startup with one line, unless starting degraded is allowed."""
    from .state import StateUnavailable, redis_store, state_kind

    gateway = settings.gateway
    if state_kind(gateway.state, workers) != "redis":
        return
    # More patient than on the request path: a first connection may take longer than one command.
    store = redis_store(gateway, op_timeout_s=max(gateway.state_timeout_ms / 1000, 1.0))

    async def ping() -> None:
        try:
            await store.ping()
        finally:
            await store.close()

    try:
        asyncio.run(ping())
    except StateUnavailable as error:
        if gateway.state_required:
            raise ConfigError(
                f"shared state {store.describe_url()} does not answer ({error.reason}); start it, fix "
                "[gateway] state, or pass --start-degraded to serve on local state until it answers"
            ) from None
        logging.getLogger("offload").warning("starting degraded: %s", error.reason)


def cmd_serve(args: argparse.Namespace) -> int:
    from .connections import GuardedHttpProtocol

    path = str(config_path(args.config))
    overrides = gateway_overrides(args)
    settings = load_settings(path, dict(overrides))  # fail here, once, with one line, before any worker starts
    host = args.host or settings.gateway.host
    port = settings.gateway.port if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be from 0 (any free port) to 65535, got {port}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if port == 0:
        # Sanic reads port 0 as "its default" (8000): pick a free one here instead, and say which.
        port = free_port_on(host)
    refuse_exposure(host, settings)
    configure_logging(args.log_format)
    check_state_store(settings, args.workers)
    workers = f" ({args.workers} workers)" if args.workers > 1 else ""
    shown_host = f"[{host}]" if ":" in host else host
    print(f"offload: serving on http://{shown_host}:{port}{workers}", flush=True)
    from .reload import hold_sighup, pid_file_path, write_pid_file

    hold_sighup()  # until the reload handlers are installed, SIGHUP must not end the server
    # Where `offload reload` finds this (main) process; removed at exit.
    write_pid_file(pid_file_path(args.pid_file, path), required=args.pid_file is not None)
    # A longer accept queue than Sanic's 100: a burst of connections waits instead of being retried a second later.
    options = {"access_log": args.access_log, "motd": False, "protocol": GuardedHttpProtocol, "backlog": 1024}
    try:
        if args.workers == 1:
            app = build_gateway(path, 1, host, overrides, args.log_format)
            app.run(host=host, port=port, single_process=True, **options)
        else:
            from sanic.worker.loader import AppLoader

            from .main_signals import stop_off_the_signal_handler
            from .metrics.multiproc import metrics_directory, remove_at_main_process_stop

            # Every worker writes its metrics where each can sum them: set before any worker starts.
            with metrics_directory() as metrics_dir:
                loader = AppLoader(factory=partial(build_gateway, path, args.workers, host, overrides, args.log_format))
                app = loader.load()
                app.prepare(host=host, port=port, workers=args.workers, **options)
                remove_at_main_process_stop(app, metrics_dir)
                stop_off_the_signal_handler(app)
                Sanic.serve(primary=app, app_loader=loader)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from .reload import check_settings, pid_file_path, signal_gateway

    path = config_path(args.config)
    check_settings(load_settings(path))  # an invalid file: one line, exit 2, and the gateway is never signalled
    pid = signal_gateway(pid_file_path(args.pid_file, path))
    print(f"offload: {path} is valid; sent SIGHUP to the gateway (PID {pid}): see its log or GET /servers last_reload")
    return 0


def servers_text(count: int) -> str:
    """``1 server``, ``3 servers``."""
    return f"{count} server{'' if count == 1 else 's'}"


def cmd_validate(args: argparse.Namespace) -> int:
    from .app import create_app

    path = config_path(args.config)
    app = create_app(load_settings(path))
    registry = app.ctx.registry
    for context in app.ctx.plugins:
        pools = ", ".join(f"{name} ({servers_text(len(registry.pool(name)))})" for name in context.pool_names)
        print(f"plugin {context.name}: prefix {context.prefix or '/'}, pools {pools}")
    print(f"{path}: ok")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import installed_plugins

    path = config_path(args.config)
    settings = load_settings(path) if path.exists() else Settings()
    enabled = set(settings.enabled_plugins())
    rows = [plugin.describe(plugin.name in enabled) for plugin in installed_plugins()]
    missing = sorted(enabled - {row["name"] for row in rows})
    if args.json:
        # "enabled" as GET /plugins names it: the plugins plugins.toml enables (here, installed or not).
        listed = [{"name": name, "installed": name not in missing} for name in settings.enabled_plugins()]
        print(json.dumps({"installed": rows, "enabled": listed}, indent=2))
        return 0
    print(f"{'name':<14} {'distribution':<22} {'version':<10} {'enabled':<8} target")
    for row in rows:
        enabled_text = "yes" if row["enabled"] else "no"
        print(
            f"{row['name']:<14} {row['distribution'] or '?':<22} {row['version'] or '?':<10} "
            f"{enabled_text:<8} {row['target']}"
        )
    for name in missing:
        print(f"{name:<14} {'(not installed)':<22} {'-':<10} {'yes':<8} -")
    return 0


def cmd_plugins_new(args: argparse.Namespace) -> int:
    from .devtools.scaffold import ScaffoldError, write_plugin
    from .plugins import installed_entry_points

    try:
        scaffold = write_plugin(args.name, Path(args.dir), installed=set(installed_entry_points()))
    except ScaffoldError as exc:
        raise ConfigError(str(exc)) from None
    print(f"offload: wrote plugin {scaffold.names.name!r} ({scaffold.names.distribution}) in {scaffold.directory}:")
    for name in scaffold.files:
        print(f"  {scaffold.directory / name}")
    print("next:")
    for command in scaffold.next_steps():
        print(f"  {command}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .devtools.demo import DemoOptions, run_demo

    options = DemoOptions(
        port=args.port, requests=args.requests, serve=args.serve, expected_throughput=args.expected_throughput
    )
    try:
        return asyncio.run(run_demo(options))
    except KeyboardInterrupt:
        return 130


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        if args.suite == "perf":
            from .devtools.bench.perf import PerfOptions, run_perf

            options = PerfOptions(duration_s=args.duration, rounds=args.rounds, soak=args.soak, json=args.json)
            return asyncio.run(run_perf(options))
        if args.suite == "outages":
            from .devtools.bench.outages import KILL_CLIENTS, OutagesOptions, parse_pool_option, run_outages

            outages = OutagesOptions(
                scenario=args.scenario,
                runs=args.runs,
                kill_clients=tuple(args.clients or KILL_CLIENTS),
                extra=tuple(parse_pool_option(text) for text in args.pool),
                json=args.json,
            )
            return asyncio.run(run_outages(outages))
        if args.suite == "scale":
            from .devtools.bench.scale import ScaleOptions, run_scale

            options = ScaleOptions(duration_s=args.duration, rounds=args.rounds, json=args.json, quick=args.quick)
            return asyncio.run(run_scale(options))
        if args.suite == "cache":
            from .devtools.bench.cache import CacheOptions, run_cache

            options = CacheOptions(duration_s=args.duration, rounds=args.rounds, json=args.json, quick=args.quick)
            return asyncio.run(run_cache(options))
        if args.suite == "client":
            from .devtools.bench.client import ClientBenchOptions, run_client_bench

            return run_client_bench(ClientBenchOptions(rounds=args.rounds, json=args.json))
        from .devtools.bench.runner import BenchOptions, run_bench

        return asyncio.run(
            run_bench(BenchOptions(out=Path(args.out), json=args.json, seed=args.seed, repeat=args.repeat))
        )
    except KeyboardInterrupt:
        return 130


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind`` of the text, refused unless above zero."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offload", description="Offload HTTP tasks to the best edge server.")
    parser.add_argument("--version", action="version", version=f"offload {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"plugins.toml (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})")
    serve.add_argument("--host", help="address to listen on (default: [gateway] host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: [gateway] port, 8899)")
    serve.add_argument("--access-log", action="store_true", help="log every request (slower)")
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="log lines on stderr as text or one JSON object each (default: text)",
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes sharing the port (default: 1)")
    serve.add_argument(
        "--state",
        help='shared state: "memory", "shared-memory" or a redis:// URL (default: [gateway] state, "auto")',
    )
    serve.add_argument("--replica", help="this gateway's name in shared health verdicts (default: hostname/pid)")
    serve.add_argument(
        "--start-degraded",
        action="store_true",
        help="start even if the Redis in --state does not answer (local state until it does)",
    )
    serve.add_argument("--pid-file", help="where to write the main process's PID (default: {config dir}/.offload.pid)")
    serve.set_defaults(handler=cmd_serve)

    reload = commands.add_parser("reload", help="check plugins.toml, then make the running gateway re-read it (SIGHUP)")
    reload.add_argument("--config", help=f"plugins.toml (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})")
    reload.add_argument("--pid-file", help="the pid file offload serve wrote (default: {config dir}/.offload.pid)")
    reload.set_defaults(handler=cmd_reload)

    validate = commands.add_parser("validate", help="check plugins.toml and the plugins it enables")
    validate.add_argument("--config", help=f"plugins.toml (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})")
    validate.set_defaults(handler=cmd_validate)

    plugins = commands.add_parser("plugins", help="list installed plugins and whether they are enabled")
    plugins.add_argument("--config", help=f"plugins.toml (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG})")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=cmd_plugins)
    plugins_commands = plugins.add_subparsers(dest="plugins_command", metavar="{new}")
    new_plugin = plugins_commands.add_parser("new", help="write a ready plugin package NAME/ (tests included)")
    new_plugin.add_argument("name", metavar="NAME", help="plugin name: lower-case letters, digits, _ and -")
    new_plugin.add_argument("--dir", default=".", help="directory to create NAME/ in (default: the current one)")
    new_plugin.set_defaults(handler=cmd_plugins_new)

    demo = commands.add_parser("demo", help="edges + gateway on loopback, and the original experiment")
    demo.add_argument("--serve", action="store_true", help="keep the gateway up for curl instead")
    demo.add_argument("--port", type=int, default=8899, help="gateway port (default: %(default)s)")
    demo.add_argument("--requests", type=int, default=1000, help="requests to replay (default: %(default)s)")
    demo.add_argument("--expected-throughput", type=int, default=25, help="local limit per second (default: 25)")
    demo.set_defaults(handler=cmd_demo)

    bench = commands.add_parser(
        "bench", help="measure the decision engine (default) or, with 'perf', what the gateway costs"
    )
    bench.add_argument(
        "suite",
        nargs="?",
        choices=["decisions", "perf", "outages", "client", "scale", "cache"],
        default="decisions",
        help="decisions: original experiment, policies, faults; perf: gateway vs direct vs nginx; "
        "outages: an edge killed or hung under load; client: CPU per upstream request, native client vs aiohttp, "
        "httpx and pyreqwest; scale: 1-3 workers vs 1-3 replicas sharing Redis behind nginx, the Redis-backed "
        "throughput rule's cost, contract writes through 1 and 2 replicas; cache: contract reads through the read "
        "cache at 0-100 %% hits vs the node and the gateway without cache, and 100 identical requests coalesced",
    )
    bench.add_argument("--json", action="store_true", help="print machine-readable results instead of tables")
    bench.add_argument(
        "--duration",
        type=positive(float),
        default=2.0,
        help="perf, scale, cache: seconds per run (default: 2; wrk: whole seconds)",
    )
    bench.add_argument(
        "--rounds",
        type=positive(int),
        default=3,
        help="perf, scale, cache: interleaved rounds, figures are medians (default: 3)",
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="scale, cache: 1 s runs, one round (scale: 20 writes); checks that it all works, the figures mean little",
    )
    bench.add_argument("--soak", action="store_true", help="perf: also gateway RSS over 1,000,000 requests")
    bench.add_argument("--runs", type=positive(int), default=3, help="outages: runs of each scenario (default: 3)")
    bench.add_argument(
        "--scenario", choices=["kill", "hang", "all"], default="all", help="outages: which (default: %(default)s)"
    )
    bench.add_argument(
        "--clients", type=positive(int), action="append", help="outages: kill's client count, repeatable (16 and 64)"
    )
    bench.add_argument(
        "--pool", action="append", default=[], metavar="KEY=VALUE", help="outages: a [plugins.math] option, repeatable"
    )
    bench.add_argument("--out", default="bench/out", help="directory for the PNG plots (default: %(default)s)")
    bench.add_argument("--seed", type=int, default=7, help="seed for the load's random gaps (default: %(default)s)")
    bench.add_argument(
        "--repeat",
        type=positive(int),
        default=1,
        help="decisions: run the policy comparisons with the oracle this many times, fresh processes each "
        "(default: %(default)s)",
    )
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``offload`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"offload: error: {exc}", file=sys.stderr)
        return 2
