"""Model updates: full pull vs delta pull through a real OCI registry, and deploy / rollback under load.

A real registry (Debian's docker-registry, htpasswd + TLS on 127.0.0.1) holds version 1 of the bundled
chat model and version 2 with one tensor group changed. Each round pulls version 2 into an empty store
(full) and into a store that has version 1 (delta), alternating. Then a server with both versions on
disk serves 10 streaming clients while versions are deployed and rolled back; every request is checked.

    .venv/bin/python bench/model_updates.py [--rounds 5] [--swaps 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import percentile  # noqa: F401 - puts the repository on sys.path

from moltbot.models.registry import RegistryAuth, pull, push
from moltbot.models.store import ModelStore
from tests.helpers import CHAT_MODEL, START_TIMEOUT_S, link_bundled_models, running_server
from tests.models import StreamingLoad, layer_ranges, tuned_copy
from tests.registry import registry_server

CLIENTS = 10


def pull_round(registry_host: str, auth: RegistryAuth, base: Path, with_v1: bool) -> tuple[int, float]:
    store = ModelStore(base)
    if with_v1:
        pull(store, f"{registry_host}/bench/gemma:v1", auth, name="gemma")
    result = pull(store, f"{registry_host}/bench/gemma:v2", auth, name="gemma")
    return result.bytes_moved, result.seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--swaps", type=int, default=6, help="deploys and rollbacks under load (each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        link_bundled_models(tmp / "cache", data_dir / "models")
        source = ModelStore(data_dir / "models")
        source.import_path(CHAT_MODEL, tuned_copy(source, tmp / "tuned.gguf"), activate=False)
        groups = len(layer_ranges(source, CHAT_MODEL, 1)) - 1
        changed_bytes = layer_ranges(source, CHAT_MODEL, 2)["block.3"][1]
        total_bytes = source.version(CHAT_MODEL, 2).size_bytes

        with registry_server(tmp / "registry") as reg:
            auth = RegistryAuth(reg.username, reg.password, reg.ca_file)
            push(source, CHAT_MODEL, 1, f"{reg.host}/bench/gemma:v1", auth)
            push(source, CHAT_MODEL, 2, f"{reg.host}/bench/gemma:v2", auth)
            full: list[tuple[int, float]] = []
            delta: list[tuple[int, float]] = []
            for index in range(args.rounds):
                full.append(pull_round(reg.host, auth, tmp / f"full-{index}", with_v1=False))
                delta.append(pull_round(reg.host, auth, tmp / f"delta-{index}", with_v1=True))

        deploys: list[float] = []
        rollbacks: list[float] = []
        switches: list[float] = []
        with running_server(data_dir, {"MOLTBOT_PARALLEL": "4", "MOLTBOT_MONITOR": "false"}) as server:
            server.wait_for_key(time.monotonic() + START_TIMEOUT_S)
            load = StreamingLoad(server)
            threads = [threading.Thread(target=load.run) for _ in range(CLIENTS)]
            for thread in threads:
                thread.start()
            try:
                with server.client(timeout=300) as admin:
                    time.sleep(2)
                    for _ in range(args.swaps):
                        for path, body, into in (
                            ("deploy", {"version": 2}, deploys),
                            ("rollback", None, rollbacks),
                        ):
                            started = time.perf_counter()
                            reply = admin.post(f"/v1/admin/models/{CHAT_MODEL}/{path}", json=body)
                            into.append(time.perf_counter() - started)
                            if reply.status_code != 200:
                                print(f"{path} failed: {reply.text}", file=sys.stderr)
                                return 1
                            switches.append(reply.json()["switch_seconds"])
                            time.sleep(2.5)  # the old version drains and unloads before the next swap
            finally:
                load.stop.set()
                for thread in threads:
                    thread.join(120)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    full_bytes, full_s = med([b for b, _ in full]), med([s for _, s in full])
    delta_bytes, delta_s = med([b for b, _ in delta]), med([s for _, s in delta])
    print(f"\nPull of version 2 ({total_bytes / 1e6:.1f} MB, {groups} tensor groups, 1 group changed = ")
    print(f"{changed_bytes / 1e6:.2f} MB), median of {args.rounds} rounds, real registry over TLS on loopback")
    print(f"{'pull':<8} {'MB moved':>10} {'seconds':>9}")
    print(f"{'full':<8} {full_bytes / 1e6:>10.2f} {full_s:>9.3f}")
    print(f"{'delta':<8} {delta_bytes / 1e6:>10.2f} {delta_s:>9.3f}")
    print(f"{'ratio':<8} {full_bytes / max(delta_bytes, 1):>9.1f}x {full_s / delta_s:>8.1f}x")
    print(f"\nSwaps under load: {CLIENTS} streaming clients, {args.swaps} deploys + {args.swaps} rollbacks")
    print(f"{'operation':<10} {'p50 s':>7} {'max s':>7}   (request to switched, version on disk)")
    print(f"{'deploy':<10} {med(deploys):>7.2f} {max(deploys):>7.2f}")
    print(f"{'rollback':<10} {med(rollbacks):>7.2f} {max(rollbacks):>7.2f}")
    print(f"engine-side switch (load + smoke test): p50 {med(switches):.2f} s")
    print(f"requests completed: {len(load.done)}, failed: {len(load.failures)}")
    for failure in load.failures[:5]:
        print(f"  {failure}")
    return 0 if not load.failures else 1


if __name__ == "__main__":
    sys.exit(main())
