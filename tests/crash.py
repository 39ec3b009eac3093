"""Kill the server with SIGKILL while writers create sessions and messages, restart it, and check that
every acknowledged write survived unchanged. Shared by tests/blackbox/test_crash.py and bench/crash_soak.py."""

from __future__ import annotations

import random
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, Server, spawn_server

WRITERS = 3


@dataclass
class Ledger:
    """What the server acknowledged: session id -> [(message id, role, content)] in order."""

    sessions: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    writes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(server: Server, key: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    try:
        with server.client(key, timeout=30) as client:
            session_id = None
            while not stop.is_set():
                if session_id is None or rng.random() < 0.2:
                    response = client.post("/v1/sessions", json={"model": CHAT_MODEL, "title": f"w{seed}"})
                    if response.status_code != 201:
                        continue
                    session_id = response.json()["id"]
                    with ledger.lock:
                        ledger.sessions[session_id] = []
                        ledger.writes += 1
                    continue
                content = f"writer {seed} says {rng.random():.12f}"
                response = client.post(
                    f"/v1/sessions/{session_id}/messages", json={"content": content, "max_tokens": 2, "temperature": 0}
                )
                if response.status_code != 200:
                    continue
                body = response.json()
                answer = body["choices"][0]["message"]["content"]
                with ledger.lock:
                    ledger.sessions[session_id] += [
                        (body["user_message_id"], "user", content),
                        (body["message_id"], "assistant", answer),
                    ]
                    ledger.writes += 2
    except httpx.HTTPError:
        return  # the server was killed under us: only what was acknowledged counts


def start(data_dir: Path, env: dict[str, str]) -> Server:
    server = spawn_server(data_dir, env)
    deadline = time.monotonic() + START_TIMEOUT_S
    server.wait_until("/readyz", 200, deadline)
    return server


def kill_cycle(data_dir: Path, env: dict[str, str], key: str, ledger: Ledger, rng: random.Random) -> float:
    """One start, writes for a random while, SIGKILL. Returns the seconds writers ran."""
    server = start(data_dir, env)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_writer, args=(server, key, ledger, stop, rng.randrange(1 << 30)))
        for _ in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    window = rng.uniform(0.2, 1.5)
    time.sleep(window)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    return window


def verify(data_dir: Path, env: dict[str, str], key: str, ledger: Ledger) -> tuple[str, int]:
    """(SQLite's integrity_check, acknowledged writes missing or changed)."""
    connection = sqlite3.connect(data_dir / "moltbot.db")
    try:
        integrity = str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()
    server = start(data_dir, env)
    lost = 0
    try:
        with server.client(key) as client:
            for session_id, expected in ledger.sessions.items():
                response = client.get(f"/v1/sessions/{session_id}")
                if response.status_code != 200:
                    lost += 1 + len(expected)
                    continue
                stored = {m["id"]: (m["role"], m["content"]) for m in response.json()["messages"]}
                lost += sum(1 for message_id, role, content in expected if stored.get(message_id) != (role, content))
    finally:
        server.stop()
    return integrity, lost
