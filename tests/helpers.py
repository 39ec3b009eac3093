"""Start the real server as a subprocess on 127.0.0.1 with a temporary data directory."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from moltbot.models.bundled import GEMMA_BASE, MINILM, QWEN_0_5B, install_bundled
from moltbot.models.store import ModelStore

# Most tests exercise the engine and the API, not a model's answers: they run on the small base model
# (fast on 2 cores); tests of instruction following, templates and tools run on the 0.5B instruct model.
CHAT_MODEL = GEMMA_BASE
EMBEDDING_MODEL = MINILM
INSTRUCT_MODEL = QWEN_0_5B
TEST_MODELS = json.dumps([CHAT_MODEL, EMBEDDING_MODEL])
START_TIMEOUT_S = 120.0
_KEY_LINE = re.compile(r"Admin API key \(shown once, store it now\): (mb_\S+)")


def require_tool(name: str) -> str:
    """The path of a program a test needs: skipped where it is not installed, but a failure in CI
    (.ci/run installs it and sets MOLTBOT_REQUIRE_TOOLS)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("MOLTBOT_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required (MOLTBOT_REQUIRE_TOOLS is set) but not installed")
        pytest.skip(f"{name} is not installed")
    return path


def log_records(text: str) -> list[dict[str, Any]]:
    """The server's JSON log lines (other lines, such as llama.cpp's own prints, are skipped)."""
    records = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def link_bundled_models(cache: Path, models_dir: Path) -> None:
    """Hard-link a once-made store of the bundled models into a fresh data directory (cheap, same
    bytes; the store replaces files rather than writing into them)."""
    install_bundled(ModelStore(cache))
    ignore = shutil.ignore_patterns(".lock", ".gc.lock", ".pin", ".tmp")
    shutil.copytree(cache, models_dir, copy_function=os.link, ignore=ignore, dirs_exist_ok=True)


def bundled_gguf(models_dir: Path) -> Path:
    """The active version's GGUF file of the bundled chat model in a store (placed there if missing)."""
    store = ModelStore(models_dir)
    install_bundled(store)
    return store.source(CHAT_MODEL).path


def run_cli(
    data_dir: Path, *args: str, stdin: str | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MOLTBOT_DATA_DIR": str(data_dir), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "moltbot", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_key(data_dir: Path, scopes: str, name: str = "test") -> str:
    result = run_cli(data_dir, "keys", "create", "--name", name, "--scopes", scopes)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    data_dir: Path
    port: int
    stdout_path: Path
    stderr_path: Path
    admin_key: str = ""
    tls: bool = True
    ca: Path | None = None  # the CA that issued the server's certificate, when not the local one

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        return self.ca or self.data_dir / "tls" / "ca.pem"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What a client needs to trust this server: its local CA (the server makes it before it listens)."""
        if not self.tls:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """One request without a key (a fresh connection)."""
        return httpx.get(self.url + path, verify=self.verify, timeout=kwargs.pop("timeout", 10), **kwargs)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def client(self, key: str | None = None, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.admin_key}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=self.verify)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples over its labels (those with all of `labels`), from /metrics."""
        with self.client() as client:
            lines = client.get("/metrics").text.splitlines()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        return sum(
            float(x.rsplit(" ", 1)[1])
            for x in lines
            if x.startswith((name + "{", name + " ")) and all(w in x.split(" ")[0] for w in wanted)
        )

    def wait_for_key(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            match = _KEY_LINE.search(self.stdout())
            if match:
                self.admin_key = match.group(1)
                return
            self._check_alive()
            time.sleep(0.05)
        raise TimeoutError("the server printed no admin key")

    def wait_until(self, path: str, status: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive()
            if self.tls and not self.ca_file.is_file():
                time.sleep(0.05)
                continue
            try:
                if self.get(path, timeout=2).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{path} never answered {status}")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.stderr()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def spawn_server(
    data_dir: Path, env: dict[str, str] | None = None, ca: Path | None = None, log_dir: Path | None = None
) -> Server:
    """Start `moltbot serve` on a random loopback port; returns at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "MOLTBOT_DATA_DIR": str(data_dir),
        "MOLTBOT_HOST": "127.0.0.1",
        "MOLTBOT_PORT": str(port),
        "MOLTBOT_CONTEXT_SIZE": "4096",
        "MOLTBOT_MODELS": TEST_MODELS,
        # Tests send many bad keys from one address on purpose; tests/security checks the default limit.
        "MOLTBOT_AUTH_FAILURES_PER_MINUTE": "100000",
        **(env or {}),
    }
    logs = log_dir or data_dir
    stdout_path, stderr_path = logs / "server.out", logs / "server.err"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "moltbot", "serve"], env=full_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
    tls = full_env.get("MOLTBOT_TLS", "true").lower() not in {"0", "off", "false", "f", "n", "no"}
    return Server(process, data_dir, port, stdout_path, stderr_path, tls=tls, ca=ca)


@contextmanager
def running_server(
    data_dir: Path,
    env: dict[str, str] | None = None,
    *,
    ready: bool = True,
    ca: Path | None = None,
    log_dir: Path | None = None,
) -> Iterator[Server]:
    server = spawn_server(data_dir, env, ca, log_dir)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        server.wait_until("/healthz", 200, deadline)
        if ready:
            server.wait_until("/readyz", 200, deadline)
        yield server
    finally:
        server.stop()


class WebhookReceiver:
    """An HTTP receiver on 127.0.0.1 that records JSON bodies; `status` and `delay_s` set how it answers."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.bodies: list[dict[str, object]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length))
                receiver.attempts += 1
                time.sleep(receiver.delay_s)
                if receiver.status < 300:
                    receiver.bodies.append(body)
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def wait_for(self, predicate: Callable[[list[dict[str, object]]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(list(self.bodies)):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        require_tool(name)  # skips here, fails in CI
    return str(found)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL on 127.0.0.1 (initdb + pg_ctl), its URL for Moltbot; removed afterwards.
    As root, the server runs as the `postgres` user (PostgreSQL refuses root), in a directory of its own
    under the system's temporary directory (pytest's are private to root)."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="moltbot-pg-"))
    data = base / "pgdata"
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "moltbot", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=on"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield f"postgresql+psycopg://moltbot@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
