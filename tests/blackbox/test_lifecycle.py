"""Start-up: readiness, the admin key printed once, bundled model placement, bad model files."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from moltbot import __version__
from moltbot.models.store import ModelStore
from tests.helpers import (
    CHAT_MODEL,
    EMBEDDING_MODEL,
    START_TIMEOUT_S,
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


def test_shutdown_lets_running_streams_finish(make_data_dir: Callable[..., Path]) -> None:
    import json
    import signal
    import threading

    data_dir = make_data_dir("drain")
    with running_server(data_dir) as server:
        server.wait_for_key(time.monotonic() + 30)
        body = {"model": CHAT_MODEL, "prompt": "1, 2, 3, 4,", "max_tokens": 120, "temperature": 0, "stream": True}
        events: list[dict[str, object]] = []

        def read() -> None:
            with server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
                events.extend(json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {"))

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)  # uvicorn waits up to 10 s for requests in flight
        reader.join(timeout=30)
        # uvicorn re-raises the signal once the graceful shutdown is done.
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"]]  # type: ignore[index]
    assert finishes[-1] == "length"
