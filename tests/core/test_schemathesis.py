"""Schemathesis against the running demo: 0 server errors, and every answer as documented.

The demo's topology runs for real, as ``offload demo`` starts it: three edges (one
hosting the chain, two relaying to it) and a gateway with the math and contracts
plugins, each its own process on 127.0.0.1. The spec is loaded from the running
gateway's ``GET /openapi.json``; every operation is then called with generated
valid and invalid input (hypothesis, a bounded number of examples each), and each
answer is checked: not a 5xx other than the documented upstream ones (502-504 with
a JSON error), a documented status, and a body matching that status's schema.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from offload.devtools.demo import DemoOptions, start_everything
from offload.devtools.ports import free_port
from offload.devtools.processes import ProcessGroup

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# Cases per operation and generation mode (valid and invalid input): about 30 operations in all.
EXAMPLES = 30
# The edges' CPU tasks at their largest take seconds (a 300 x 300 matrix product in pure Python):
# valid sizes above these are scaled down so the run stays well under a minute. Invalid ones stay.
CPU_TASK_CAPS = {"/nthprime/{value}": 20_000, "/matmul/{value}": 40, "/hashchain/{value}": 50_000}
CPU_TASK_MAXIMA = {"/nthprime/{value}": 200_000, "/matmul/{value}": 300, "/hashchain/{value}": 5_000_000}


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The demo's edges and gateway as real processes; yields (gateway URL, operator token)."""
    workdir: Path = tmp_path_factory.mktemp("schemathesis-demo")
    group = ProcessGroup(workdir)
    token = secrets.token_urlsafe(24)
    try:
        url = asyncio.run(start_everything(group, DemoOptions(port=free_port()), workdir, token))
        yield url, token
    finally:
        group.stop_all()


@pytest.fixture(scope="module")
def demo_schema(demo_gateway: tuple[str, str]) -> schemathesis.BaseSchema:
    """The running gateway's own document, loaded from its /openapi.json."""
    url, _token = demo_gateway
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


def scaled_down(case: schemathesis.Case) -> schemathesis.Case:
    """A valid CPU-task size scaled down (see CPU_TASK_CAPS); a size out of range is sent as generated."""
    path = case.operation.path
    value = (case.path_parameters or {}).get("value")
    valid = path in CPU_TASK_CAPS and type(value) is int and 1 <= value <= CPU_TASK_MAXIMA[path]
    if valid:
        case.path_parameters = {**case.path_parameters, "value": min(value, CPU_TASK_CAPS[path])}
    return case


def failures_of(operation: schemathesis.APIOperation, mode: GenerationMode, headers: dict[str, str]) -> str | None:
    """Run ``EXAMPLES`` generated cases of ``operation``; the first failure's report, or None."""

    # No shrinking: a failure is reported as found (with its curl line), and the run stays short.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode).map(scaled_down))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(checks=CHECKS, headers=headers, timeout=30)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_every_operation_answers_as_documented(
    demo_schema: schemathesis.BaseSchema, demo_gateway: tuple[str, str]
) -> None:
    # The operator's token goes along: writes (transactions, pool updates) are exercised too, not only refused.
    _url, token = demo_gateway
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in demo_schema.get_all_operations()]
    assert len(operations) >= 25  # the core's routes and both plugins'
    found = []
    for operation in operations:
        found.append(failures_of(operation, GenerationMode.POSITIVE, headers))
        # Invalid input needs an input to spoil: a route without parameters or body has none.
        if any(True for _ in operation.iter_parameters()) or operation.body:
            found.append(failures_of(operation, GenerationMode.NEGATIVE, headers))
    failures = [failure for failure in found if failure is not None]
    assert not failures, "\n\n".join(failures)


def test_the_spec_covers_both_plugins_and_the_core(demo_gateway: tuple[str, str]) -> None:
    url, _token = demo_gateway
    document = requests.get(f"{url}/openapi.json", timeout=10).json()
    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert {("GET", "/square/{num}"), ("POST", "/updateservers"), ("POST", "/contracts/rpc")} <= operations
    assert {("GET", "/health"), ("GET", "/openapi.json"), ("GET", "/docs")} <= operations
    tags = {tag["name"] for tag in document["tags"]}
    assert {"plugin math", "plugin contracts"} <= tags
