"""TLS 1.3 only. With no certificate configured, a local CA and a server certificate it signs are made
in the data directory on first start (keys 0600); clients trust the CA file.

The server keeps one SSLContext; reloading loads the files again into it, so new connections get the
new certificate without a restart (SIGHUP) and open connections are not disturbed.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moltbot.storage.files import write_atomic

log = logging.getLogger(__name__)

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
_RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(slots=True, frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path | None = None  # the local CA's certificate, when Moltbot made the server certificate


def local_names(extra: Sequence[str] = ()) -> list[str]:
    """The names a local certificate covers: localhost, loopback addresses, this host, configured names."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), *extra]
    return list(dict.fromkeys(n for n in names if n))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Moltbot local CA ({socket.gethostname()})")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    write_atomic(directory / "ca.key", _key_pem(key))
    write_atomic(directory / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _make_server(
    directory: Path, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[str]
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(directory / "server.key", _key_pem(key))
    write_atomic(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM))


def _needs_new_server_cert(path: Path, names: Sequence[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return True
    if cert.not_valid_after_utc - _now() < _RENEW_BEFORE:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    return set(san) != set(_san(names))


def ensure_local_certificate(directory: Path, names: Sequence[str]) -> TlsFiles:
    """The local CA (made once) and a server certificate for `names` (made again when the names change
    or it is within 30 days of expiry)."""
    ca_pem, ca_key_pem = directory / "ca.pem", directory / "ca.key"
    if ca_pem.is_file() and ca_key_pem.is_file():
        ca = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_pem.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{ca_key_pem} is not the local CA's key")
        ca_key = loaded
    else:
        ca, ca_key = _make_ca(directory)
        log.info("created a local certificate authority: %s", ca_pem)
    if _needs_new_server_cert(directory / "server.pem", names):
        _make_server(directory, ca, ca_key, names)
        log.info("issued a server certificate for %s", ", ".join(names))
    return TlsFiles(directory / "server.pem", directory / "server.key", ca_pem)


def fingerprint(cert_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context that speaks TLS 1.3 and nothing older."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_COMPRESSION
    context.load_cert_chain(files.cert, files.key)
    return context


def reload(context: ssl.SSLContext, files: TlsFiles) -> None:
    """Load the certificate and key again: the next handshakes use them."""
    context.load_cert_chain(files.cert, files.key)


def client_context(ca_file: Path) -> ssl.SSLContext:
    """What a client of this server uses: verify against the local CA, TLS 1.3."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context
