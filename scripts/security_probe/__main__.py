"""Run every attack of issue 9 ("Safe to expose to callers") against a running demo and tabulate it.

Standalone on purpose: it needs only the standard library and aiohttp and never imports
``offload``, so the same script measures old code (BEFORE) and new code (AFTER).

Start a demo first (everything on 127.0.0.1), note the PIDs and URLs it prints::

    OFFLOAD_API_TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))') \\
        .venv/bin/offload demo --serve --port 8899
      local      pid 1234    http://127.0.0.1:41001      <- the edge that hosts the EVM chain
      edge-near  pid 1235    http://127.0.0.1:41002
      edge-far   pid 1236    http://127.0.0.1:41003
      gateway    pid 1237    http://127.0.0.1:8899

then, in another shell::

    .venv/bin/python scripts/security_probe \\
        --gateway http://127.0.0.1:8899 --gateway-pid 1237 \\
        --edge http://127.0.0.1:41001 --edge-pid 1234 \\
        --token "$OFFLOAD_API_TOKEN" --label after  [--json] [--only csrf-text,rebind]

Or let the script start the demo itself (a fresh token, a free port), probe it and stop it
(SIGINT to the demo, then it checks that every process the demo printed is gone)::

    .venv/bin/python scripts/security_probe --demo .venv/bin/offload --label after \\
        --save-json /tmp/probe_after.json > /tmp/probe_after.txt

    # old code, from a worktree (the demo's children inherit PYTHONPATH):
    git worktree add /tmp/before 9fd4726
    PYTHONPATH=/tmp/before/core:/tmp/before/edge_server:/tmp/before/plugins/math:/tmp/before/plugins/contracts \\
        .venv/bin/python scripts/security_probe --demo '.venv/bin/python -m offload' --label before \\
        --save-json /tmp/probe_before.json > /tmp/probe_before.txt
    git worktree remove --force /tmp/before

    # the old gateway's descriptor limit matters for half-open: run it again as on a desktop (ulimit -n 1024);
    # the rows are named half-open@nofile=1024
    ... --demo ... --demo-nofile 1024 --only half-open --save-json /tmp/probe_before_nofile1024.json

    # a variant row from another commit: names get '@9846a17' appended
    ... --demo ... --only deep --suffix 9846a17 --save-json /tmp/probe_deep_9846a17.json

Other ways to print results::

    security_probe --from-json run1.json [run2.json ...]       # re-render (several runs merged)
    security_probe --compare before.json after.json [--markdown] # one BEFORE/AFTER table
    security_probe --compare b1.json,b2.json a1.json,a2.json     # several runs per side, merged
    security_probe --list                                        # the attacks, in running order

Each attack records the HTTP status(es), the Counter contract's value before/after
(``GET /contracts/Counter/get`` -> envelope "data"), the gateway's RSS before/after/peak
(``/proc/PID/status`` VmRSS), the worst latency of ``GET /health`` polled on a fresh
connection every 50 ms during the attack ("stall"), and whether the gateway and the
edge are still alive afterwards. Every request goes to a loopback address, every
request and every attack has a time limit, and every loop is bounded.

Attacks run in this order, the destructive ones last (the old gateway dies of
deep-utf16; half-open and edge-admin-delay may wedge a process). Once a process is
dead, the attacks that need it are reported as skipped.

Exit status: 0 when every attack ran, 1 if an attack was skipped or failed to run,
2 on bad arguments.
"""

import sys

# Run as a directory (``python scripts/security_probe``), sys.path[0] is this directory: the modules next to
# this file import one another by their own names.
from cli import main

if __name__ == "__main__":
    sys.exit(main())
