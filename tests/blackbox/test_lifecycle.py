"""Start-up and shutdown: readiness, the admin key printed once, bundled model placement, bad model files,
the drain window."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from moltbot import __version__
from moltbot.models.store import ModelStore
from tests.helpers import (
    CHAT_MODEL,
    EMBEDDING_MODEL,
    START_TIMEOUT_S,
    Server,
    bundled_gguf,
    log_records,
    running_server,
    spawn_server,
)


def test_readyz_is_503_until_the_models_load(tmp_path: Path) -> None:
    # A data dir with no models: the bundled ones are placed (assembled, verified) after the port opens.
    server = spawn_server(tmp_path / "data")
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and 200 not in statuses:
            if not server.ca_file.is_file():  # the TLS certificate comes first, then the port opens
                server._check_alive()
                time.sleep(0.01)
                continue
            try:
                statuses.append(server.get("/readyz", timeout=2).status_code)
            except httpx.TransportError:
                server._check_alive()
            time.sleep(0.01)
        assert statuses[0] == 503 and statuses[-1] == 200
        store = ModelStore(tmp_path / "data" / "models")
        assert store.source(CHAT_MODEL).path.is_file() and store.active(CHAT_MODEL) == 1
        assert (store.source(EMBEDDING_MODEL).path / "model.safetensors").is_file()
    finally:
        server.stop()


def test_admin_key_printed_once_and_hashed(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("first-start")
    with running_server(data_dir) as first:
        first.wait_for_key(time.monotonic() + 30)
        key = first.admin_key
        with first.client() as client:
            assert client.get("/v1/models").status_code == 200
    assert key.encode() not in (data_dir / "moltbot.db").read_bytes()
    assert key not in first.stderr()
    with running_server(data_dir) as second:
        time.sleep(0.5)
        assert "Admin API key" not in second.stdout()
        with second.client(key) as client:
            assert client.get("/v1/models").status_code == 200


def test_malformed_gguf_is_refused_and_others_serve(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("bad-gguf")
    good = bundled_gguf(data_dir / "models").read_bytes()
    (data_dir / "models" / "truncated.gguf").write_bytes(good[: len(good) // 3])
    (data_dir / "models" / "garbage.gguf").write_bytes(b"not a model at all")
    with running_server(data_dir) as server:
        server.wait_for_key(time.monotonic() + 30)
        with server.client() as client:
            ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
            assert ids == {CHAT_MODEL, EMBEDDING_MODEL}
            missing = client.post("/v1/completions", json={"model": "truncated", "prompt": "hi"})
            assert missing.status_code == 404
        log = server.stderr()
        assert "truncated.gguf in the models directory is not imported" in log and "lies outside the file" in log
        assert "garbage.gguf in the models directory is not imported" in log


def test_model_path_serves_a_gguf_under_its_stem(make_data_dir: Callable[..., Path], tmp_path: Path) -> None:
    data_dir = make_data_dir("model-path")
    extra = tmp_path / "my-assistant.gguf"
    extra.hardlink_to(bundled_gguf(data_dir / "models"))
    env = {"MOLTBOT_MODEL_PATH": str(extra), "MOLTBOT_BUNDLED_MODELS": "false"}
    with running_server(data_dir, env) as server:
        server.wait_for_key(time.monotonic() + 30)
        with server.client() as client:
            ids = {m["id"] for m in client.get("/v1/models").json()["data"]}
            assert "my-assistant" in ids
            body = {"model": "my-assistant", "prompt": "Hello", "max_tokens": 2}
            assert client.post("/v1/completions", json=body).status_code == 200


def test_profile_and_settings_are_logged(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("profile")
    with running_server(data_dir, {"MOLTBOT_PROFILE": "minimal", "MOLTBOT_CONTEXT_SIZE": "1024"}) as server:
        messages = [r["message"] for r in log_records(server.stderr())]
        assert f"moltbot {__version__}, profile minimal" in messages
        assert any('"context_size": 1024' in m for m in messages if m.startswith("effective settings"))
        server.wait_for_key(time.monotonic() + 30)
        long_prompt = {"model": CHAT_MODEL, "prompt": "word " * 1200, "max_tokens": 1}
        with server.client() as client:
            assert client.post("/v1/completions", json=long_prompt).status_code == 400


def _stream_until_signalled(server: Server, body: dict[str, object]) -> tuple[list[dict[str, Any]], list[str]]:
    """Stream `body`; once its first event is in, SIGTERM the server; return the events and any error
    the reading thread met (a thread never raises out: a cut stream is a result here, not a crash)."""
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    first = threading.Event()

    def read() -> None:
        try:
            with server.client(timeout=600) as client, client.stream("POST", "/v1/completions", json=body) as r:
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        events.append(json.loads(line[6:]))
                        first.set()
        except httpx.HTTPError as exc:
            errors.append(repr(exc))
        finally:
            first.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(timeout=120), "no event in 120 s"
    server.process.send_signal(signal.SIGTERM)
    reader.join(timeout=600)
    assert not reader.is_alive()
    # uvicorn re-raises the signal once the graceful shutdown is done.
    assert server.process.wait(timeout=600) in (0, -signal.SIGTERM)
    return events, errors


def test_shutdown_lets_running_streams_finish(make_data_dir: Callable[..., Path]) -> None:
    """The default drain window is the request time limit: a reply the server started, finishes."""
    with running_server(make_data_dir("drain")) as server:
        server.wait_for_key(time.monotonic() + 30)
        body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 120, "temperature": 0, "stream": True}
        events, errors = _stream_until_signalled(server, body)
    assert not errors
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert finishes[-1] == "length"
    assert sum(1 for e in events if e["choices"] and e["choices"][0]["text"]) > 60


def test_a_drain_window_that_ends_cuts_the_stream_and_says_so(make_data_dir: Callable[..., Path]) -> None:
    env = {"MOLTBOT_SHUTDOWN_DRAIN_S": "1"}
    with running_server(make_data_dir("cut"), env) as server:
        server.wait_for_key(time.monotonic() + 30)
        body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 3000, "temperature": 0, "stream": True}
        events, _errors = _stream_until_signalled(server, body)
        log = server.stderr()
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]
    assert "length" not in finishes
    messages = [r.get("message", "") for r in log_records(log)]
    assert any("drain window of 1 s" in m and "1 generations still running" in m for m in messages), messages[-5:]
