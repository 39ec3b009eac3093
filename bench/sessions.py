"""Sessions: 32 conversations taking turns through the sessions API, 10 turns each, then one more after a
restart (the disk tier restores each history) and one more after a restart with the disk tier emptied
(each history computed again). Prints TTFT by kind of turn, and the latency of a durable, encrypted
message write on SQLite and on PostgreSQL (a throwaway server on 127.0.0.1).

    .venv/bin/python bench/sessions.py [--sessions 32] [--turns 10] [--writes 500]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import BUNDLED_CHAT_MODEL, percentile, prepare_data_dir

from tests.helpers import Server, postgres_server, running_server


def ttft(client: httpx.Client, session_id: str, content: str) -> float:
    body = {"content": content, "max_tokens": 8, "temperature": 0, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", f"/v1/sessions/{session_id}/messages", json=body) as response:
        response.raise_for_status()
        first = None
        for line in response.iter_lines():
            if first is None and line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - started
        return first if first is not None else time.perf_counter() - started


def words(session: int, turn: int) -> str:
    return f"Session {session}, turn {turn}: " + " ".join(f"item{session}-{turn}-{i}" for i in range(20))


def write_latency(url: str | None, tmp: Path, writes: int) -> list[float]:
    from moltbot.storage.crypto import Vault
    from moltbot.storage.database import create_database_engine, migrate
    from moltbot.storage.keys import KeyStore, Scope
    from moltbot.storage.sessions import SessionRepository

    engine = create_database_engine(url, tmp / "writes.db")
    migrate(engine)
    key, _ = KeyStore(engine).create("bench", frozenset({Scope.SESSIONS}))
    repo = SessionRepository(engine, Vault(engine, tmp / f"kek-{'pg' if url else 'sqlite'}"))
    session = repo.create(key.id, "m")
    latencies = []
    for i in range(writes):
        started = time.perf_counter()
        repo.add_message(key.id, session.id, "user", f"message {i}: " + "lorem ipsum " * 40)
        latencies.append(time.perf_counter() - started)
    engine.dispose()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"turn 1 (cold, short)": [], "turns 2+ (memory tier)": []}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _, key = prepare_data_dir(tmp, "sessions")
        env = {"MOLTBOT_MONITOR": "false", "MOLTBOT_RATE_LIMIT_RPM": "0", "MOLTBOT_RATE_LIMIT_TPM": "0"}

        def client(server: Server) -> httpx.Client:
            return server.client(key, timeout=300)

        with running_server(data_dir, env) as server, client(server) as api:
            ids = [
                api.post("/v1/sessions", json={"model": BUNDLED_CHAT_MODEL, "system_prompt": "Be brief."}).json()["id"]
                for _ in range(args.sessions)
            ]
            for turn in range(1, args.turns + 1):
                for index, session_id in enumerate(ids):
                    kind = "turn 1 (cold, short)" if turn == 1 else "turns 2+ (memory tier)"
                    results[kind].append(ttft(api, session_id, words(index, turn)))
            history = json.loads(api.get(f"/v1/sessions/{ids[0]}/export").text)["messages"]
        kv_files = sum(1 for _ in (data_dir / "kv").rglob("*.kv"))
        with running_server(data_dir, env) as server, client(server) as api:
            results["after restart (disk tier)"] = [ttft(api, s, words(i, args.turns + 1)) for i, s in enumerate(ids)]
        shutil.rmtree(data_dir / "kv")
        with running_server(data_dir, env) as server, client(server) as api:
            results["after restart (no cache)"] = [ttft(api, s, words(i, args.turns + 2)) for i, s in enumerate(ids)]
        writes = {"SQLite": write_latency(None, Path(tmp), args.writes)}
        with postgres_server() as url:
            writes["PostgreSQL"] = write_latency(url, Path(tmp), args.writes)

    print(f"\nSessions: {args.sessions} sessions x {args.turns} turns, then one turn after each restart")
    print(f"(history at the last turns: {len(history)} messages; {kv_files} KV states on disk at restart)")
    print(f"{'turn':<28} {'n':>5} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12}")
    for kind, values in results.items():
        print(
            f"{kind:<28} {len(values):>5} {1000 * percentile(values, 50):>12.1f} {1000 * percentile(values, 99):>12.1f}"
        )
    cold = percentile(results["after restart (no cache)"], 50)
    disk = percentile(results["after restart (disk tier)"], 50)
    print(f"disk tier vs recompute after a restart: {cold / disk:.1f}x faster TTFT p50")
    print(f"\n{'message write (encrypted, durable)':<36} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in writes.items():
        print(
            f"{name:<36} {len(values):>5} {1000 * percentile(values, 50):>8.2f} {1000 * percentile(values, 99):>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
