"""The key-encryption key through the CLI and the server: created on first start, rotated, refused when lost."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, run_cli, running_server

NO_MODELS = {"MOLTBOT_BUNDLED_MODELS": "false"}


def test_kek_made_on_start_rotated_by_the_cli_and_required_afterwards(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data, NO_MODELS, ready=False):
        pass
    kek = data / "secrets" / "kek"
    assert kek.is_file() and oct(kek.stat().st_mode & 0o777) == "0o600"
    before = kek.read_text()
    rotated = run_cli(data, "keys", "rotate-kek")
    assert rotated.returncode == 0, rotated.stderr
    assert kek.read_text() != before and before.strip() not in rotated.stdout
    new_key = run_cli(data, "keys", "rotate-data-key")
    assert new_key.returncode == 0 and "new data key" in new_key.stdout
    with running_server(data, NO_MODELS, ready=False) as server:  # the server opens the data keys with the new KEK
        assert server.get("/healthz").status_code == 200
    connection = sqlite3.connect(data / "moltbot.db")
    try:
        actions = [row[0] for row in connection.execute("SELECT action FROM audit_log")]
        wrapped = connection.execute("SELECT count(*), count(DISTINCT kek_id) FROM data_keys").fetchone()
    finally:
        connection.close()
    assert "kek.rotate" in actions and "data_key.rotate" in actions
    assert wrapped == (2, 1)  # both data keys wrapped by the current KEK
    kek.unlink()
    refused = run_cli(data, "serve", env=NO_MODELS, timeout=60)
    assert refused.returncode == 2 and "key-encryption key" in refused.stderr and "missing" in refused.stderr


def test_rotations_while_the_server_runs(make_data_dir: Callable[..., Path]) -> None:
    data = make_data_dir("rotating")
    with running_server(data, {"MOLTBOT_MONITOR": "false"}) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client() as client:
            sid = client.post("/v1/sessions", json={"model": CHAT_MODEL, "title": "before"}).json()["id"]
            assert run_cli(data, "keys", "rotate-kek").returncode == 0
            rotated = run_cli(data, "keys", "rotate-data-key")
            assert rotated.returncode == 0 and "1 stored values re-encrypted" in rotated.stdout
            # The server reads a value re-encrypted under a data key it has not seen, wrapped by a new KEK.
            assert client.get(f"/v1/sessions/{sid}").json()["title"] == "before"
            assert client.patch(f"/v1/sessions/{sid}", json={"title": "after"}).status_code == 200
            assert client.get(f"/v1/sessions/{sid}").json()["title"] == "after"
