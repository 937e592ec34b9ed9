"""No GraphQL request makes the server fail: schemathesis generates queries and mutations from the schema
the server publishes and sends them to `/graphql` of a real server (`fuzz_server`, on each database).

A resolver's refusal (not found, wrong password, bad input) is an answer, not a failure, so
schemathesis's GraphQL "server error" check, which counts every resolver error, is not used. The checks
here are the service's rules: never a 5xx, never the masked "Unexpected error.", every resolver error
with its stable code. `BETH_FUZZ_MAX_EXAMPLES` sets the examples per field; generation is derandomized.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode

from tests.fixtures.server import ServerProcess

MAX_EXAMPLES = int(os.environ.get("BETH_FUZZ_MAX_EXAMPLES", "20"))
MASKED = "Unexpected error."


def failures_in(status: int, payload: Any) -> list[str]:
    """What is wrong with one GraphQL answer, by the service's rules."""
    if status >= 500:
        return [f"HTTP {status}"]
    if not isinstance(payload, dict) or not ({"data", "errors"} & set(payload)):
        return [f"not a GraphQL answer: {payload!r:.200}"]
    problems = []
    for error in payload.get("errors") or []:
        if error.get("message") == MASKED:
            problems.append(f"an unexpected failure at {error.get('path')}")
        elif error.get("path") and not (error.get("extensions") or {}).get("code"):
            problems.append(f"a resolver error without a code: {error.get('message')!r}")
    return problems


def fuzz(operation: APIOperation, mode: GenerationMode, server: ServerProcess) -> str | None:
    """Up to MAX_EXAMPLES generated requests for one field; the first failure with its query, or None."""

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # report the first failure as it is; shrinking costs requests
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=server.url, timeout=60)
        try:
            payload = response.json()
        except ValueError:
            payload = response.text
        problems = failures_in(response.status_code, payload)
        assert not problems, f"{problems}\nquery: {case.body}\nanswer: {response.text[:1000]}"

    try:
        run()
    except Unsatisfiable:  # no invalid input to make for a field without arguments
        return None
    except AssertionError as exc:
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_no_graphql_request_makes_the_server_fail(fuzz_server: ServerProcess) -> None:
    schema = schemathesis.graphql.from_url(f"{fuzz_server.url}/graphql")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 5  # the schema was read: the web client's queries and mutations
    runs = [
        fuzz(op, mode, fuzz_server) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    problems = [problem for problem in runs if problem]
    assert fuzz_server.process is not None
    assert fuzz_server.process.poll() is None, "the server died"
    assert not problems, "\n\n".join(problems)
