"""A full disk: writes answer 507, nothing stored is damaged, and the server works again once space is
freed, without a restart. The data directory lives on a small tmpfs the test mounts (root only)."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, bundled_gguf, running_server


@contextlib.contextmanager
def small_tmpfs(size_mb: int) -> Iterator[Path]:
    mountpoint = Path(tempfile.mkdtemp(prefix="moltbot-full-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem has no byte left."""
    filler = directory / "filler"
    handle = filler.open("wb", buffering=0)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    handle.write(b"\0" * size)
    finally:
        with contextlib.suppress(OSError):
            handle.close()
    return filler


def test_disk_full_is_507_and_recovers(make_data_dir: Callable[..., Path], tmp_path: Path) -> None:
    models = make_data_dir("full-models") / "models"
    with small_tmpfs(24) as mount:
        env = {
            "MOLTBOT_BUNDLED_MODELS": "false",
            "MOLTBOT_MODEL_PATH": str(bundled_gguf(models)),
            "MOLTBOT_MONITOR": "false",
        }
        with running_server(mount / "data", env, log_dir=tmp_path) as server:
            server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
            with server.client() as client:
                sid = client.post("/v1/sessions", json={"model": CHAT_MODEL}).json()["id"]
                first = client.post(f"/v1/sessions/{sid}/messages", json={"content": "before", "max_tokens": 2})
                assert first.status_code == 200
                before = client.get(f"/v1/sessions/{sid}").json()["messages"]
                filler = fill(mount)
                for attempt in range(50):  # the WAL may still have room for a few pages
                    content = f"{attempt} " + "lorem " * 350
                    refused = client.post(f"/v1/sessions/{sid}/messages", json={"content": content, "max_tokens": 2})
                    if refused.status_code == 507:
                        break
                assert refused.status_code == 507, refused.text
                assert refused.json()["error"]["code"] == "insufficient_storage"
                assert client.post("/v1/sessions", json={"model": CHAT_MODEL}).status_code in (201, 507)
                assert client.get(f"/v1/sessions/{sid}").json()["messages"][: len(before)] == before
                filler.unlink()
                again = client.post(f"/v1/sessions/{sid}/messages", json={"content": "after", "max_tokens": 2})
                assert again.status_code == 200, again.text
                stored = client.get(f"/v1/sessions/{sid}").json()["messages"]
                assert stored[: len(before)] == before and stored[-2]["content"] == "after"
        connection = sqlite3.connect(mount / "data" / "moltbot.db")
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            connection.close()
