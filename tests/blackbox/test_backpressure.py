"""Admission limits, request time limits and client disconnects, through the real server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.blackbox.test_errors import assert_envelope
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, running_server

STORY = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def tight_server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    env = {"MOLTBOT_PARALLEL": "1", "MOLTBOT_MAX_QUEUE": "1", "MOLTBOT_REQUEST_TIMEOUT_S": "3"}
    with running_server(make_data_dir("tight"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def _long_body(stream: bool, max_tokens: int = 400) -> dict[str, object]:
    # Counting never reaches a stop: the model writes until max_tokens.
    prompt = "1, 2, 3, 4, 5, 6, 7, 8,"
    return {"model": CHAT_MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream}


def test_queue_full_gives_503_with_retry_after(tight_server: Server) -> None:
    statuses: list[int] = []
    busy: list[httpx.Response] = []
    lock = threading.Lock()

    def call() -> None:
        with tight_server.client() as client:
            response = client.post("/v1/completions", json=_long_body(False, 60))
        with lock:
            statuses.append(response.status_code)
            if response.status_code == 503:
                busy.append(response)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=120)
    assert 200 in statuses and busy, statuses
    assert set(statuses) <= {200, 503}
    error = assert_envelope(busy[0], 503)
    assert error["code"] == "engine_busy"
    assert int(busy[0].headers["retry-after"]) >= 1


def test_request_time_limit_gives_504(tight_server: Server) -> None:
    with tight_server.client() as client:
        response = client.post("/v1/completions", json=_long_body(False, 2000))
    error = assert_envelope(response, 504)
    assert error["code"] == "request_timeout"


def test_request_time_limit_ends_a_stream_with_an_error_event(tight_server: Server) -> None:
    with (
        tight_server.client() as client,
        client.stream("POST", "/v1/completions", json=_long_body(True, 2000)) as r,
    ):
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "request_timeout"


def test_disconnect_frees_the_engine(tight_server: Server) -> None:
    with tight_server.client() as client:
        with client.stream("POST", "/v1/completions", json=_long_body(True, 2000)) as response:
            for _ in zip(range(3), response.iter_lines(), strict=False):
                pass
        # Had the abandoned stream kept generating, this would wait for it (2000 tokens, ~30 s here).
        started = time.monotonic()
        quick = client.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": STORY, "max_tokens": 1})
        waited = time.monotonic() - started
    assert quick.status_code == 200
    assert waited < 2.5, f"the engine was still busy {waited:.1f} s after the client left"
