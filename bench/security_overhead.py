"""What security costs: TLS 1.3 vs plain HTTP on the same server build, same run; and AES-256-GCM at rest.

Two Moltbot servers on the same GGUF: one with TLS (the default), one with MOLTBOT_TLS=off (loopback),
rate limits off on both. Rounds alternate between them. Workloads: a small chat request (8 tokens),
GET /v1/models on a kept-alive connection, a session write (POST /v1/sessions: an encrypted,
durable SQLite write), and GET /v1/models on a new connection each time (a TLS handshake per
request). Then, in this process, the cost of encryption at rest: sealing and opening a 1 KiB message,
and a durable SQLite write (synchronous=FULL, as acknowledged writes are) of a 1 KiB value in the clear
vs encrypted.

    .venv/bin/python bench/security_overhead.py [--rounds 20] [--chat 10] [--light 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import Call, alternate, client_for, percentile, prepare_data_dir, print_ab

from moltbot.models.bundled import GEMMA_BASE as BUNDLED_CHAT_MODEL
from tests.helpers import Server, running_server

CHAT = {
    "model": BUNDLED_CHAT_MODEL,
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 8,
    "temperature": 0,
}
SESSION = {"model": BUNDLED_CHAT_MODEL, "title": "a durable, encrypted write", "system_prompt": "Be brief."}
MESSAGE = ("The quick brown fox jumps over the lazy dog. " * 23)[:1024]


def at_rest_costs(writes: int) -> tuple[float, float, float]:
    """Microseconds to seal+open 1 KiB; milliseconds per durable write of 1 KiB, clear and encrypted."""
    from sqlalchemy import Column, Integer, LargeBinary, MetaData, Table, insert

    from moltbot.storage.crypto import Vault
    from moltbot.storage.database import open_database

    with tempfile.TemporaryDirectory() as tmp:
        engine = open_database(Path(tmp) / "bench.db")
        table = Table("bench", MetaData(), Column("id", Integer, primary_key=True), Column("body", LargeBinary))
        table.create(engine)
        vault = Vault(engine, Path(tmp) / "kek")
        count = 20_000
        started = time.perf_counter()
        for i in range(count):
            vault.decrypt_text(vault.encrypt_text(MESSAGE, "bench", "body", i), "bench", "body", i)
        seal_open_us = (time.perf_counter() - started) / count * 1e6
        per_write = {}
        for mode in ("clear", "encrypted", "clear2", "encrypted2"):  # twice each, interleaved
            started = time.perf_counter()
            for i in range(writes):
                row = hash((mode, i)) & 0x7FFFFFFF
                body = vault.encrypt_text(MESSAGE, "bench", "body", row) if "encrypted" in mode else MESSAGE.encode()
                with engine.begin() as conn:
                    conn.execute(insert(table).values(id=row, body=body))
            per_write[mode] = (time.perf_counter() - started) / writes * 1000
        engine.dispose()
    clear = (per_write["clear"] + per_write["clear2"]) / 2
    encrypted = (per_write["encrypted"] + per_write["encrypted2"]) / 2
    return seal_open_us, clear, encrypted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--chat", type=int, default=10)
    parser.add_argument("--light", type=int, default=100)
    parser.add_argument("--writes", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = {
            name: prepare_data_dir(os.path.join(tmp, name), "chat,models:read,sessions") for name in ("tls", "plain")
        }
        common = {
            "MOLTBOT_THREADS": str(args.threads),
            "MOLTBOT_PROFILE": "minimal",
            "MOLTBOT_LOG_LEVEL": "warning",
            "MOLTBOT_RATE_LIMIT_RPM": "0",
            "MOLTBOT_RATE_LIMIT_TPM": "0",
        }
        with (
            running_server(prepared["tls"][0], common) as tls,
            running_server(prepared["plain"][0], {**common, "MOLTBOT_TLS": "off"}) as plain,
        ):
            servers: dict[str, Server] = {"plain": plain, "tls": tls}
            clients = {name: client_for(s, prepared[name][2]) for name, s in servers.items()}
            workloads: dict[str, tuple[int, Call]] = {
                "chat (8 tokens)": (args.chat, lambda c: c.post("/v1/chat/completions", json=CHAT)),
                "GET /v1/models": (args.light, lambda c: c.get("/v1/models")),
                "session write": (args.light // 2, lambda c: c.post("/v1/sessions", json=SESSION)),
                "new connection each": (
                    args.light // 2,
                    lambda c: c.get("/v1/models", headers={"Connection": "close"}),
                ),
            }
            result = alternate(clients, workloads, args.rounds)
            for client in clients.values():
                client.close()

    print(f"\nSecurity overhead: {args.rounds} alternating rounds, TLS 1.3 vs plain HTTP (loopback)")
    print_ab(result, workloads, "plain", "tls", {"plain": "plain HTTP", "tls": "TLS 1.3"})
    seal_open_us, clear_ms, encrypted_ms = at_rest_costs(args.writes)
    print(
        f"\nat rest (AES-256-GCM, in process): seal+open 1 KiB {seal_open_us:.1f} us; durable SQLite write of "
        f"1 KiB: clear {clear_ms:.3f} ms, encrypted {encrypted_ms:.3f} ms ({encrypted_ms - clear_ms:+.3f} ms)"
    )
    chat_p99 = {n: 1000 * percentile(result.latencies["chat (8 tokens)", n], 99) for n in ("plain", "tls")}
    print(
        f"chat p99 added by TLS: {chat_p99['tls'] - chat_p99['plain']:+.2f} ms "
        f"(target < 2 ms; p99 of {len(result.latencies['chat (8 tokens)', 'tls'])} requests per side)"
    )
    print(f"(cpu: {os.cpu_count()} logical, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
