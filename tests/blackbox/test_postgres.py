"""The server on PostgreSQL (MOLTBOT_DATABASE_URL): keys, sessions and turns stored there, surviving a
restart; encrypted like on SQLite."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, postgres_server, running_server

CANARY = "canary-pg-7d0c"


def test_sessions_on_postgresql(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("on-postgres")
    with postgres_server() as url:
        env = {"MOLTBOT_DATABASE_URL": url, "MOLTBOT_MONITOR": "false"}
        with running_server(data_dir, env) as server:
            server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
            with server.client() as client:
                sid = client.post("/v1/sessions", json={"model": CHAT_MODEL, "title": CANARY}).json()["id"]
                reply = client.post(f"/v1/sessions/{sid}/messages", json={"content": CANARY, "max_tokens": 2})
                assert reply.status_code == 200, reply.text
        assert not (data_dir / "moltbot.db").exists()  # nothing went to SQLite
        with running_server(data_dir, env) as again, again.client(server.admin_key) as client:
            stored = client.get(f"/v1/sessions/{sid}").json()
            assert stored["title"] == CANARY and stored["messages"][0]["content"] == CANARY
        engine = create_engine(url)
        with engine.connect() as conn:
            contents = conn.execute(text("SELECT content FROM messages")).scalars().all()
            assert contents and all(CANARY.encode() not in bytes(c) for c in contents)
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() >= 1
        engine.dispose()
