"""Strict offline mode: the process connects to loopback and to the services it was configured with,
nothing else.

An audit hook (PEP 578) sees every `socket.connect`, `socket.sendto` and `socket.getaddrinfo` made
from Python, including by libraries, and refuses (PermissionError) and logs any other destination.
Hugging Face and transformers are told to stay offline too. A hook cannot be removed once added: this
is installed once, by `moltbot serve`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}
# Loopback, and the unspecified addresses a server binds to (lookups of them happen when it listens).
_LOCAL = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"))


class OfflinePolicy:
    """Which destinations are allowed: loopback, and the configured hosts, addresses and networks."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.names: set[str] = {"localhost"}
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(_LOCAL)
        for raw in allowed:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.rstrip("."))
        # The configured names' addresses, resolved now, before the hook watches lookups.
        for name in sorted(self.names - {"localhost"}):
            try:
                for info in socket.getaddrinfo(name, None):
                    self.networks.append(ipaddress.ip_network(info[4][0]))
            except OSError:
                log.warning("offline mode: %s does not resolve now; connections to it will be refused", name)

    def allows_address(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def allows_name(self, host: str) -> bool:
        name = host.strip().lower().rstrip(".")
        return name in self.names or self.allows_address(name)


def hosts_of(urls: Sequence[str]) -> list[str]:
    return [host for host in (urlsplit(url).hostname for url in urls) if host]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


_inside = threading.local()


def _refuse(what: str, destination: object) -> None:
    if not getattr(_inside, "logging", False):  # logging must not re-enter the hook's refusal path
        _inside.logging = True
        try:
            log.warning("offline mode: refused %s to %s", what, destination)
        finally:
            _inside.logging = False
    raise PermissionError(f"offline mode: {what} to {destination} is not allowed")


def install(allowed: Iterable[str]) -> OfflinePolicy:
    """Set the offline environment and add the audit hook; returns the policy in force."""
    os.environ.update(OFFLINE_ENVIRONMENT)
    policy = OfflinePolicy(allowed)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in ("socket.connect", "socket.sendto"):
            sock, address = args[0], args[1]
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not policy.allows_address(str(address[0])):
                _refuse("a connection" if event == "socket.connect" else "a datagram", address[0])
        elif event == "socket.getaddrinfo":
            host = args[0]
            if isinstance(host, bytes):
                host = host.decode("idna", errors="replace")
            if host is not None and not _is_address(str(host)) and not policy.allows_name(str(host)):
                _refuse("a name lookup", host)  # an address literal is judged when it is connected to

    sys.addaudithook(hook)
    return policy
