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


@pytest.fixture(scope="module")
def queue_server(make_data_dir: Callable[..., Path]) -> Iterator[Server]:
    """One slot, one place in the queue, the default time limits (a busy machine is slow, not wrong)."""
    env = {"MOLTBOT_PARALLEL": "1", "MOLTBOT_MAX_QUEUE": "1"}
    with running_server(make_data_dir("queue"), env) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        yield server


def _running(server: Server) -> float:
    return server.metric("moltbot_engine_sequences_running")


def _waiting(server: Server) -> float:
    return server.metric("moltbot_engine_requests_waiting")


def test_queue_full_gives_503_with_retry_after(queue_server: Server) -> None:
    """The slot busy (a stream we hold), the queue full (a request waiting): the next one gets 503 at
    once. Each step waits for the server to say it is there, not for a time."""
    queued: list[httpx.Response] = []
    with queue_server.client() as client, client.stream("POST", "/v1/completions", json=_long_body(True, 2000)) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: {"))  # the slot is taken

        def wait_in_queue() -> None:
            with queue_server.client() as other:
                queued.append(other.post("/v1/completions", json=_long_body(False, 2)))

        waiter = threading.Thread(target=wait_in_queue)
        waiter.start()
        deadline = time.monotonic() + 60
        while _waiting(queue_server) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _waiting(queue_server) == 1
        busy = client.post("/v1/completions", json=_long_body(False, 2))
    waiter.join(timeout=120)  # the held stream is closed: the waiting request runs
    error = assert_envelope(busy, 503)
    assert error["code"] == "engine_busy"
    assert int(busy.headers["retry-after"]) >= 1
    assert [r.status_code for r in queued] == [200]


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
    cancelled = tight_server.metric("moltbot_engine_sequences_cancelled_total")
    with tight_server.client() as client:
        with client.stream("POST", "/v1/completions", json=_long_body(True, 2000)) as response:
            for _ in zip(range(3), response.iter_lines(), strict=False):
                pass
        # Had the abandoned stream kept generating, its sequence would run until this server's 3 s time
        # limit (a timeout, not a cancellation); the engine ends it at its next step instead, as cancelled.
        left = time.monotonic()
        while _running(tight_server) > 0 and time.monotonic() - left < 20:
            time.sleep(0.05)
        freed = time.monotonic() - left
        quick = client.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": STORY, "max_tokens": 1})
    assert quick.status_code == 200
    assert _running(tight_server) == 0, f"the engine was still busy {freed:.1f} s after the client left"
    assert tight_server.metric("moltbot_engine_sequences_cancelled_total") == cancelled + 1


def test_a_session_turn_past_the_time_limit_answers_504_and_is_stored_interrupted(tight_server: Server) -> None:
    """As chat answers it (it used to be stored as complete and answered 200 with finish_reason stop)."""
    with tight_server.client() as client:
        session = client.post("/v1/sessions", json={"model": CHAT_MODEL}).json()
        turn = client.post(
            f"/v1/sessions/{session['id']}/messages",
            json={
                "content": "Continue counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
                "max_tokens": 2000,
                "temperature": 0,
            },
        )
        error = assert_envelope(turn, 504)
        assert error["code"] == "request_timeout"
        stored = client.get(f"/v1/sessions/{session['id']}").json()["messages"]
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "interrupted")]
