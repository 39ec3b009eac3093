"""A real OCI registry for tests: CNCF distribution (`docker-registry serve`, Debian's package) on
127.0.0.1 with filesystem storage under a temporary directory, TLS from a fresh test CA and htpasswd
(bcrypt) basic auth, both optional. Tests can read the stored blobs' bytes straight off the disk."""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import httpx
import yaml

from moltbot.gateway.tls import ensure_local_certificate
from tests.helpers import free_port, require_tool

REGISTRY_BINARY = "docker-registry"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# The cheapest cost bcrypt allows: the registry checks the password on every request.
BCRYPT_ROUNDS = 4


@dataclass(frozen=True, slots=True)
class Registry:
    host: str  # "127.0.0.1:PORT", what an image reference starts with
    url: str  # "https://127.0.0.1:PORT" (or http:// without TLS)
    username: str  # empty without auth
    password: str  # empty without auth
    ca_file: Path | None  # the CA that issued the registry's certificate; None without TLS
    storage: Path  # the filesystem driver's root directory
    log_file: Path  # the registry's stdout and stderr

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client needs to trust this registry."""
        if self.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def auth(self) -> tuple[str, str] | None:
        """Basic-auth credentials for httpx, or None when the registry has no auth."""
        return (self.username, self.password) if self.username else None

    def client(self, *, authenticated: bool = True, timeout: float = 10) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, verify=self.verify, auth=self.auth if authenticated else None, timeout=timeout
        )

    def blob_paths(self) -> list[Path]:
        """Every stored blob's data file (docker/registry/v2/blobs/sha256/xx/<hex>/data)."""
        return sorted((self.storage / "docker" / "registry" / "v2" / "blobs").glob("*/*/*/data"))

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""


def registry_binary() -> str:
    """docker-registry's path: skipped where it is not installed, a failure in CI (MOLTBOT_REQUIRE_TOOLS)."""
    found = shutil.which(REGISTRY_BINARY) or next(
        (p for p in (f"/usr/bin/{REGISTRY_BINARY}", f"/usr/sbin/{REGISTRY_BINARY}") if Path(p).is_file()), None
    )
    return found or require_tool(REGISTRY_BINARY)


def _config(root: Path, port: int, *, auth: bool, tls: bool) -> tuple[dict[str, object], str, str, Path | None]:
    """The registry's configuration, and the user, password and CA file it was made with."""
    http: dict[str, object] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_urlsafe(32)}
    ca_file: Path | None = None
    if tls:
        files = ensure_local_certificate(root / "tls", ["127.0.0.1", "localhost"])
        http["tls"] = {"certificate": str(files.cert), "key": str(files.key)}
        ca_file = files.ca
    config: dict[str, object] = {
        "version": "0.1",
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "storage")}, "delete": {"enabled": True}},
        "http": http,
    }
    username = password = ""
    if auth:
        username, password = f"user-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
        htpasswd = root / "htpasswd"
        htpasswd.write_text(f"{username}:{hashed}\n")
        config["auth"] = {"htpasswd": {"realm": "moltbot-test", "path": str(htpasswd)}}
    return config, username, password, ca_file


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(registry: Registry, process: subprocess.Popen[bytes], deadline: float) -> None:
    """Until GET /v2/ answers: 401 with auth, 200 without."""
    expected = 401 if registry.username else 200
    verify = registry.verify
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {process.returncode}:\n{registry.log()[-4000:]}")
        try:
            status = httpx.get(f"{registry.url}/v2/", verify=verify, timeout=2).status_code
            if status == expected:
                return
            last = f"status {status}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(f"docker-registry's /v2/ never answered {expected} ({last}):\n{registry.log()[-4000:]}")


@contextmanager
def registry_server(tmp: Path, *, auth: bool = True, tls: bool = True) -> Iterator[Registry]:
    """`docker-registry serve` on a free loopback port with its config, storage, certificates and log
    under `tmp`; stopped (SIGTERM, then SIGKILL) on exit."""
    binary = registry_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config, username, password, ca_file = _config(tmp, port, auth=auth, tls=tls)
    config_file = tmp / "config.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    registry = Registry(
        host=f"127.0.0.1:{port}",
        url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
        username=username,
        password=password,
        ca_file=ca_file,
        storage=tmp / "storage",
        log_file=tmp / "registry.log",
    )
    # REGISTRY_* variables (REGISTRY_HTTP_ADDR, ...) would override the config file's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with registry.log_file.open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_file)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        _wait_ready(registry, process, time.monotonic() + START_TIMEOUT_S)
        yield registry
    finally:
        _stop(process)


def registry_env(reg: Registry, **extra: str) -> dict[str, str]:
    """The settings that point Moltbot's CLI at this registry."""
    env = {"MOLTBOT_REGISTRY_USERNAME": reg.username, "MOLTBOT_REGISTRY_PASSWORD": reg.password}
    if reg.ca_file is not None:
        env["MOLTBOT_REGISTRY_CA_FILE"] = str(reg.ca_file)
    else:
        env["MOLTBOT_REGISTRY_INSECURE"] = reg.host
    return {**env, **extra}
