"""TLS through the real server: 1.3 only, the local CA, operator certificates, reload on SIGHUP,
plain HTTP only on loopback."""

from __future__ import annotations

import signal
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from moltbot.gateway import tls
from tests.helpers import Server, free_port, run_cli, running_server

NO_MODELS = {"MOLTBOT_BUNDLED_MODELS": "false"}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with no models: TLS does not need them, and it starts in a second."""
    with running_server(tmp_path_factory.mktemp("tls"), NO_MODELS, ready=False) as server:
        yield server


def handshake(server: Server, context: ssl.SSLContext, name: str = "127.0.0.1") -> tuple[str | None, bytes]:
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=name) as conn,
    ):
        return conn.version(), conn.getpeercert(binary_form=True) or b""


def test_tls_13_is_negotiated(bare: Server) -> None:
    context = ssl.create_default_context(cafile=str(bare.ca_file))
    version, _ = handshake(bare, context)
    assert version == "TLSv1.3"
    assert handshake(bare, context, name="localhost")[0] == "TLSv1.3"  # the certificate names localhost too


def test_a_tls_12_client_is_refused(bare: Server) -> None:
    context = ssl.create_default_context(cafile=str(bare.ca_file))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(bare, context)


def test_plain_http_to_the_tls_port_gets_nothing(bare: Server) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{bare.port}/healthz", timeout=5)


def test_an_untrusted_client_refuses_the_local_certificate(bare: Server) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(bare.url + "/healthz", timeout=5)  # the system's CAs do not know the local CA
    assert bare.get("/healthz").json() == {"status": "ok"}


def test_local_ca_files_are_private_and_printed(bare: Server) -> None:
    directory = bare.data_dir / "tls"
    for name in ("ca.key", "server.key", "ca.pem", "server.pem"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    fingerprint = tls.fingerprint(bare.ca_file)
    assert fingerprint in bare.stdout()
    shown = run_cli(bare.data_dir, "ca")
    assert shown.returncode == 0
    assert str(bare.ca_file) in shown.stdout and fingerprint in shown.stdout and "--cacert" in shown.stdout
    assert "BEGIN" not in shown.stdout  # never a key


def test_sighup_reloads_the_certificate(bare: Server) -> None:
    context = ssl.create_default_context(cafile=str(bare.ca_file))
    _, before = handshake(bare, context)
    (bare.data_dir / "tls" / "server.pem").unlink()
    assert run_cli(bare.data_dir, "ca").returncode == 0  # issues a new server certificate from the same CA
    new = x509.load_pem_x509_certificate((bare.data_dir / "tls" / "server.pem").read_bytes())
    bare.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    after = before
    while after == before and time.monotonic() < deadline:
        time.sleep(0.1)
        _, after = handshake(bare, context)
    assert x509.load_der_x509_certificate(after).serial_number == new.serial_number
    assert bare.process.poll() is None


def test_operator_certificate(tmp_path: Path) -> None:
    own = tls.ensure_local_certificate(tmp_path / "own-pki", ["127.0.0.1", "moltbot.internal"])
    env = {**NO_MODELS, "MOLTBOT_TLS_CERT_FILE": str(own.cert), "MOLTBOT_TLS_KEY_FILE": str(own.key)}
    with running_server(tmp_path / "data", env, ready=False, ca=own.ca) as server:
        assert not (tmp_path / "data" / "tls").exists()  # no local CA is made
        assert own.ca is not None
        context = ssl.create_default_context(cafile=str(own.ca))
        version, cert = handshake(server, context)
        assert version == "TLSv1.3"
        assert cert == x509.load_pem_x509_certificate(own.cert.read_bytes()).public_bytes(Encoding.DER)


def test_a_broken_certificate_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    env = {**NO_MODELS, "MOLTBOT_TLS_CERT_FILE": str(bad), "MOLTBOT_TLS_KEY_FILE": str(bad)}
    result = run_cli(tmp_path / "data", "serve", env=env, timeout=60)
    assert result.returncode == 2 and "TLS certificate cannot be used" in result.stderr


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    env = {**NO_MODELS, "MOLTBOT_TLS": "off", "MOLTBOT_HOST": "0.0.0.0", "MOLTBOT_PORT": str(free_port())}
    refused = run_cli(tmp_path / "data", "serve", env=env, timeout=60)
    assert refused.returncode == 2
    assert "only allowed on a loopback address" in refused.stderr
    with running_server(tmp_path / "plain", {**NO_MODELS, "MOLTBOT_TLS": "off"}, ready=False) as server:
        assert server.url.startswith("http://")
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        assert not (tmp_path / "plain" / "tls").exists()
