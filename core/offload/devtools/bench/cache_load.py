"""The load of ``offload bench cache``: eth_call bodies with a chosen share of repeats, sent by wrk.

Every request is ``eth_call`` of ``Hello.greet(name)`` (a pure view of the demo
chain) at one explicit, long-final block. A request is *hot* (its ``name`` is
one of a few fixed ones, so every one after the first may be a cache hit) or
*unique* (a ``name`` no request of any run used before: a miss). Which one is
decided by a running credit, not a coin, so a 95 % mix is 95 % on every run.

wrk sends them (a Lua script builds each body) and, per answer, counts the
gateway's ``X-Offload-Cache`` outcome and JSON-RPC errors, so every figure says
what share of hits it was really measured at.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from .closed_loop import LoadResult, parse_wrk, wrk_argv

# keccak256("greet(string)")[:4]; a test checks it against eth_utils.
GREET_SELECTOR = "ead710c4"
# The longest name that fits one ABI word (the Lua encoder pads to exactly one).
MAX_NAME_BYTES = 32
# How many distinct hot names a mix cycles through.
HOT_KEYS = 16
# What wrk's script prints last, once per run: the answers it saw, by kind.
OUTCOME_LINE = re.compile(r"^offload-cache: (.*)$", re.MULTILINE)
OUTCOME_KEYS = ("hit", "coalesced", "miss", "unmarked", "rpc_errors")


def greet_calldata(name: str) -> str:
    """``greet(name)`` ABI-encoded (selector, offset, length, padded bytes): what the Lua script builds too."""
    raw = name.encode()
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"a name of at most {MAX_NAME_BYTES} bytes fits one word, got {len(raw)}")
    return "0x" + GREET_SELECTOR + f"{32:064x}" + f"{len(raw):064x}" + raw.hex().ljust(64, "0")


def call_body(to: str, name: str, block: int) -> bytes:
    """One JSON-RPC eth_call of ``greet(name)`` on ``to`` at ``block``."""
    params = [{"to": to, "data": greet_calldata(name)}, hex(block)]
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": params}).encode()


# Globals, not locals: wrk reads a thread's counters with thread:get(), which sees globals only.
LUA_SCRIPT = r"""
-- offload bench cache: eth_call of greet(name), hot_pct % of them from a few fixed names.
-- Arguments after "--": to-address, block (0x hex), salt, hot percent, hot names.
local selector = "__SELECTOR__"
threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

local function hex(text)
  return (text:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function body_for(name)
  local data = "0x" .. selector .. string.format("%064x", 32) .. string.format("%064x", #name)
    .. hex(name) .. string.rep("0", 64 - 2 * #name)
  return '{"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": [{"to": "' .. to
    .. '", "data": "' .. data .. '"}, "' .. block .. '"]}'
end

function init(args)
  to, block, salt = args[1], args[2], args[3]
  hot_pct, hot_names = tonumber(args[4]), tonumber(args[5])
  sent, credit = 0, 0
  hit, coalesced, miss, unmarked, rpc_errors = 0, 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  hot = {}
  for k = 1, hot_names do hot[k] = wrk.format(nil, nil, nil, body_for("hot-" .. k)) end
end

function request()
  sent = sent + 1
  credit = credit + hot_pct
  if credit >= 100 then
    credit = credit - 100
    return hot[(sent % hot_names) + 1]
  end
  -- salt-thread-count: used by no other request of this run, nor of any other run.
  return wrk.format(nil, nil, nil, body_for(salt .. "-" .. thread_index .. "-" .. sent))
end

function response(status, headers, body)
  local outcome = headers["X-Offload-Cache"] or headers["x-offload-cache"]
  if outcome == "hit" then hit = hit + 1
  elseif outcome == "coalesced" then coalesced = coalesced + 1
  elseif outcome == "miss" then miss = miss + 1
  else unmarked = unmarked + 1 end
  -- A fast error would pass for a fast answer: count them.
  if status ~= 200 or body:find('"error"', 1, true) then rpc_errors = rpc_errors + 1 end
end

function done(summary, latency, requests)
  local totals = {}
  for _, key in ipairs({"hit", "coalesced", "miss", "unmarked", "rpc_errors"}) do
    totals[key] = 0
    for _, thread in ipairs(threads) do totals[key] = totals[key] + (thread:get(key) or 0) end
  end
  io.write(string.format("offload-cache: hit=%d coalesced=%d miss=%d unmarked=%d rpc_errors=%d\n",
    totals.hit, totals.coalesced, totals.miss, totals.unmarked, totals.rpc_errors))
end
""".replace("__SELECTOR__", GREET_SELECTOR)


@dataclass(frozen=True)
class Workload:
    """What every request of a run calls: ``greet`` on contract ``to`` at ``block``."""

    to: str
    block: int


@dataclass(frozen=True)
class MixedResult:
    """One run's figures and the answers it saw, by cache outcome."""

    load: LoadResult
    hot_pct: int
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def hit_share(self) -> float | None:
        """Hits among the answers that carried an outcome; None when none did (no cache in the path)."""
        marked = sum(self.outcomes.get(key, 0) for key in ("hit", "coalesced", "miss"))
        return self.outcomes.get("hit", 0) / marked if marked else None


def parse_outcomes(output: str) -> dict[str, int]:
    """The script's last line as numbers; every key zero when it is missing."""
    match = OUTCOME_LINE.search(output)
    pairs = dict(part.split("=", 1) for part in match[1].split()) if match else {}
    return {key: int(pairs.get(key, 0)) for key in OUTCOME_KEYS}


class MixedLoad:
    """Runs wrk with the eth_call script; each run gets a fresh salt, so its unique names stay unique."""

    def __init__(self, workload: Workload, workdir: Path) -> None:
        self.workload = workload
        self.script = workdir / "eth_call.lua"
        self.script.write_text(LUA_SCRIPT)
        self.runs = 0

    def argv(self, url: str, connections: int, duration_s: float, hot_pct: int) -> list[str]:
        """wrk's command line: the script, then its arguments after ``--``."""
        self.runs += 1
        salt = f"{secrets.token_hex(4)}{self.runs:x}"  # <= 12 characters: the name stays under 32 bytes
        base = wrk_argv(url, connections, duration_s)
        args = [self.workload.to, hex(self.workload.block), salt, str(hot_pct), str(HOT_KEYS)]
        return [*base[:-1], "-s", str(self.script), base[-1], "--", *args]

    async def run(self, url: str, connections: int, duration_s: float, hot_pct: int) -> MixedResult:
        """One bounded wrk run (in a thread, so this process's loop stays free)."""
        argv = self.argv(url, connections, duration_s, hot_pct)
        output = await asyncio.to_thread(_run, argv, duration_s)
        outcomes = parse_outcomes(output)
        load = parse_wrk(output, connections)
        # Errors inside a 200 (JSON-RPC errors) are errors too.
        load = replace(load, errors=max(load.errors, outcomes["rpc_errors"]))
        return MixedResult(load, hot_pct, outcomes)


def _run(argv: list[str], duration_s: float) -> str:
    # wrk stops itself after -d; the timeout only guards a hang.
    return subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 31, check=True).stdout
