"""Where the running server listens, for the CLI: recorded by `moltbot serve`, else from the settings.

`moltbot serve --port 9000` writes `<data dir>/run/server.json` (its URL and pid) once it listens and
removes it when it stops, so `moltbot chat`, `alerts`, `models deploy` and `ca` find it without flags.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from moltbot.settings import Settings
from moltbot.storage.files import write_atomic

_UNSPECIFIED = {"0.0.0.0", "::", ""}  # noqa: S104 - a bind address, not a connection target


def record_path(settings: Settings) -> Path:
    return settings.data_dir / "run" / "server.json"


def server_url(scheme: str, host: str, port: int) -> str:
    """The base URL (with /v1) a client on this machine uses for a server bound to host:port."""
    target = "127.0.0.1" if host in _UNSPECIFIED else host
    if ":" in target:
        target = f"[{target}]"
    return f"{scheme}://{target}:{port}/v1"


def record(settings: Settings, url: str) -> Path:
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps({"url": url, "pid": os.getpid()}).encode(), mode=0o600)
    return path


def forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_url(settings: Settings) -> str:
    """The running server's URL if it recorded one (and still runs), else the configured host and port."""
    try:
        found = json.loads(record_path(settings).read_text())
        if isinstance(found, dict) and isinstance(found.get("url"), str) and _alive(int(found.get("pid", 0))):
            return str(found["url"])
    except (OSError, ValueError, TypeError):
        pass
    return server_url(settings.scheme, settings.host, settings.port)


def api_base(url: str) -> str:
    """A base URL with or without `/v1` (and trailing slashes), as the API's base: ends in /v1."""
    base = url.strip().rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"
