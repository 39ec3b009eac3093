"""Schemathesis over the server's own OpenAPI document, with a valid admin key, through TLS: no 5xx,
and every response (errors included) matches the document."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.helpers import START_TIMEOUT_S, Server, running_server

EXAMPLES = 40
# Reaches out to whatever registry host a request names (tests talk to loopback only), or deletes the
# server's models: both are tested by tests/blackbox/test_ollama_pull.py.
NOT_FUZZED = {"/api/pull", "/api/delete"}
# Same examples every run, so CI is reproducible; MOLTBOT_FUZZ_EXPLORE=1 draws new ones each time.
DERANDOMIZE = not os.environ.get("MOLTBOT_FUZZ_EXPLORE")


@pytest.fixture(scope="module")
def fuzzed(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {
        "MOLTBOT_MAX_TOKENS_LIMIT": "8",  # generated requests stay quick on a CPU
        "MOLTBOT_RATE_LIMIT_RPM": "0",
        "MOLTBOT_RATE_LIMIT_TPM": "0",
        "MOLTBOT_MONITOR_INTERVAL_S": "1",
    }
    with running_server(make_data_dir("fuzzed"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def test_no_server_errors_and_responses_match_the_document(fuzzed: Server) -> None:
    with fuzzed.client() as client:
        document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    session.verify = str(fuzzed.ca_file)
    headers = {"Authorization": f"Bearer {fuzzed.admin_key}"}
    checked: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in NOT_FUZZED:
            continue

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=DERANDOMIZE,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=fuzzed.url, session=session, headers=headers, timeout=60, verify=str(fuzzed.ca_file)
            )
            statuses[response.status_code] += 1
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])

        run()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 10, checked
    # Both accepted and refused requests were exercised, and nothing answered 5xx.
    assert statuses[200] > 0 and statuses[400] > 0, statuses
    assert not [code for code in statuses if code >= 500], statuses
    assert fuzzed.process.poll() is None
    assert httpx.get(fuzzed.url + "/healthz", verify=fuzzed.verify).status_code == 200
