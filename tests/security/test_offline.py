"""Strict offline mode: the audit hook refuses outbound connections and lookups but loopback and the
configured services (in a child process: a hook cannot be removed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.helpers import START_TIMEOUT_S, log_records, running_server

PROBE = r"""
import json, socket, os
from moltbot import offline

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
port = listener.getsockname()[1]
offline.install(["198.51.100.0/24", "internal.example"])
results = {"env": os.environ.get("HF_HUB_OFFLINE")}

def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except PermissionError as exc:
        results[name] = "refused: " + str(exc)
    except OSError as exc:
        results[name] = "network error: " + type(exc).__name__

def connect(host, port, timeout=0.5):
    with socket.create_connection((host, port), timeout=timeout):
        pass

attempt("loopback", lambda: connect("127.0.0.1", port))
attempt("outbound", lambda: connect("192.0.2.1", 443))
attempt("outbound_v6", lambda: connect("2001:db8::1", 443))
attempt("lookup", lambda: socket.getaddrinfo("huggingface.co", 443))
attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("8.8.8.8", 53)))
attempt("allowed_network", lambda: connect("198.51.100.7", 9, timeout=0.2))
attempt("allowed_name_lookup", lambda: socket.getaddrinfo("internal.example", 443))
attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect("/nonexistent"))
print(json.dumps(results))
"""


def test_outbound_connections_are_refused_and_loopback_works() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["env"] == "1"
    assert outcome["loopback"] == "ok"
    for name, host in (("outbound", "192.0.2.1"), ("outbound_v6", "2001:db8::1"), ("udp", "8.8.8.8")):
        assert outcome[name].startswith("refused: offline mode") and host in outcome[name], outcome[name]
    assert outcome["lookup"].startswith("refused: offline mode: a name lookup to huggingface.co")
    # Configured destinations get through the hook (and then meet whatever network there is).
    assert not outcome["allowed_network"].startswith("refused")
    assert not outcome["allowed_name_lookup"].startswith("refused")
    assert not outcome["unix"].startswith("refused")
    assert "offline mode: refused a connection to 192.0.2.1" in result.stderr


def test_the_server_runs_offline_by_default(make_data_dir: Callable[..., Path]) -> None:
    with running_server(make_data_dir("offline")) as server:
        server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        with server.client() as client:
            assert client.get("/v1/models").status_code == 200
        messages = [r["message"] for r in log_records(server.stderr())]
    assert any(m.startswith("offline mode: outbound connections only to loopback") for m in messages)
