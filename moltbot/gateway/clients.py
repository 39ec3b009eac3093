"""The client's address: the TCP peer, or what a trusted proxy says in X-Forwarded-For.

`X-Forwarded-For` is read only when the peer is one of the configured trusted proxies; then the
address is the rightmost hop that is not itself a trusted proxy (the leftmost entries are whatever
the client wrote, so they are never believed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> list[Network]:
    """`10.0.0.1`, `10.0.0.0/8`, `::1` into networks; raises ValueError naming a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return networks


def _within(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    if not trusted or not _within(peer, trusted):
        return peer
    forwarded = ",".join(value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a proxy that forwards garbage: fall back to what we know
    return peer
