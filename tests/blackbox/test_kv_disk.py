"""The disk tier through the real server: a session resumed after a restart does not compute its
history again; damaged state files are ignored (the turn is computed) and removed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, running_server

HISTORY = "Here is what I know about the city: " + " ".join(f"fact {i} is noted." for i in range(40))


def engine_counter(server: Server, name: str) -> float:
    with server.client() as client:
        text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.labels.get("model") == CHAT_MODEL)
    return 0.0


def test_a_session_resumed_after_a_restart_skips_recomputation(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("kv-disk")
    env = {"MOLTBOT_MONITOR": "false"}
    with running_server(data_dir, env) as first:
        first.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        admin = first.admin_key
        with first.client() as client:
            sid = client.post("/v1/sessions", json={"model": CHAT_MODEL, "system_prompt": "Be brief."}).json()["id"]
            turn = client.post(f"/v1/sessions/{sid}/messages", json={"content": HISTORY, "max_tokens": 8})
            assert turn.status_code == 200
            prompt_tokens = turn.json()["usage"]["prompt_tokens"]
    files = list((data_dir / "kv" / CHAT_MODEL).glob("*.kv"))
    assert files, "the slot's state was not written at shutdown"
    assert HISTORY[:40].encode() not in b"".join(p.read_bytes() for p in files)

    with running_server(data_dir, env) as second:
        second.admin_key = admin
        with second.client() as client:
            again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "And then?", "max_tokens": 4})
        assert again.status_code == 200
        assert engine_counter(second, "moltbot_engine_disk_cache_restores") >= 1
        assert engine_counter(second, "moltbot_engine_cache_reused_tokens") >= prompt_tokens

    for path in (data_dir / "kv" / CHAT_MODEL).glob("*.kv"):
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
    with running_server(data_dir, env) as third:
        third.admin_key = admin
        with third.client() as client:
            recomputed = client.post(f"/v1/sessions/{sid}/messages", json={"content": "Once more.", "max_tokens": 4})
        assert recomputed.status_code == 200
        assert engine_counter(third, "moltbot_engine_disk_cache_restores") == 0
        log = third.stderr()
    assert "could not be loaded and is removed" in log
