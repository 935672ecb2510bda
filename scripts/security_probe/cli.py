"""The command line: the arguments, and running, rendering or comparing probes."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from dataclasses import asdict

from attacks import ATTACKS, BY_NAME
from common import UsageError, require_loopback
from demo import Demo, parse_nofile
from monitor import monitor_child
from probe import run_probe
from report import compare_table, load_runs, markdown_table, text_table

# --- main ------------------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> int:
    demo: Demo | None = None
    stop_report: list[str] = []
    if args.demo:
        if not args.token:
            args.token = secrets.token_urlsafe(24)
        demo = Demo(args.demo, args.token, parse_nofile(args.demo_nofile))
        try:
            await demo.start()
            args.gateway_pid, gateway = demo.gateway()
            args.gateway = require_loopback(gateway, "the demo's gateway")
            args.edge_pid, edge = demo.chain_edge()
            args.edge = require_loopback(edge, "the demo's chain edge")
            print("\n".join(demo.lines), file=sys.stderr)
            records, meta = await run_probe(args)
        finally:
            stop_report = await demo.stop()
            for line in stop_report:
                print(f"security_probe: {line}", file=sys.stderr)
        meta["demo"] = {"argv": demo.argv, "processes": demo.children, "stop": stop_report, "nofile": demo.nofile}
    else:
        records, meta = await run_probe(args)
    suffixes = [f"nofile={args.demo_nofile}"] if args.demo and args.demo_nofile else []
    suffixes += [args.suffix] if args.suffix else []
    for record in records:
        for suffix in suffixes:
            record.name += f"@{suffix}"
    rows = [asdict(record) for record in records]
    if args.json:
        print(json.dumps({"meta": meta, "records": rows}, indent=2, default=str))
    elif args.markdown:
        print(markdown_table(rows))
    else:
        print(text_table(rows, meta))
    if args.save_json:
        with open(args.save_json, "w") as handle:
            json.dump({"meta": meta, "records": rows}, handle, indent=2, default=str)
    return 1 if any(record.skipped or not record.ran for record in records) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="security_probe",
        description="Run the attacks of issue 9 against a running `offload demo --serve` (loopback only).",
    )
    parser.add_argument("--gateway", help="gateway base URL, e.g. http://127.0.0.1:8899 (loopback only)")
    parser.add_argument(
        "--demo",
        metavar="COMMAND",
        help="start 'COMMAND demo --serve --port <free>' (e.g. '.venv/bin/offload'), probe it, stop it "
        "(takes the place of --gateway/--edge and the PIDs)",
    )
    parser.add_argument(
        "--demo-nofile",
        metavar="SOFT[:HARD]",
        help="with --demo: the demo's open-files limit (e.g. 1024, a common desktop default); "
        "attack names get '@nofile=...' appended",
    )
    parser.add_argument("--gateway-pid", type=int, help="gateway PID (RSS from /proc, alive check, fd limit)")
    parser.add_argument("--edge", help="base URL of the edge that hosts the chain (loopback only)")
    parser.add_argument("--edge-pid", type=int, help="that edge's PID (alive check)")
    parser.add_argument("--token", help="the operator's token (for the with-token row and the delay restore)")
    parser.add_argument("--only", help=f"comma-separated attacks to run: {', '.join(BY_NAME)} (or 'deep')")
    parser.add_argument("--label", default="", help="a name for this run, printed with the table (before/after)")
    parser.add_argument("--suffix", help="append '@SUFFIX' to every attack name (a variant row, e.g. another commit)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--save-json", metavar="FILE", help="also write the JSON results to FILE")
    parser.add_argument("--from-json", nargs="+", metavar="FILE", help="render saved run(s) instead of attacking")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="one BEFORE/AFTER table from saved runs (several files per side: comma-separated)",
    )
    parser.add_argument("--list", action="store_true", help="list the attacks and exit")
    parser.add_argument("--monitor-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--monitor-url", help=argparse.SUPPRESS)
    parser.add_argument("--monitor-pid", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.monitor_child:
        url = None if args.monitor_url in (None, "-") else args.monitor_url
        return asyncio.run(monitor_child(url, args.monitor_pid or None))
    if args.list:
        for spec in ATTACKS:
            print(f"{spec.name:<18} {spec.target:<8} {spec.title}")
        return 0
    if args.compare:
        before, _ = load_runs(args.compare[0].split(","))
        after, _ = load_runs(args.compare[1].split(","))
        print(compare_table(before, after, args.markdown))
        return 0
    if args.from_json:
        records, meta = load_runs(args.from_json)
        print(
            json.dumps({"meta": meta, "records": records}, indent=2)
            if args.json
            else markdown_table(records)
            if args.markdown
            else text_table(records, meta)
        )
        return 0
    if args.demo:
        return asyncio.run(main_async(args))
    if not args.gateway:
        raise UsageError("security_probe: --gateway http://127.0.0.1:PORT (or --demo COMMAND) is required")
    args.gateway = require_loopback(args.gateway, "--gateway")
    if args.edge:
        args.edge = require_loopback(args.edge, "--edge")
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130
