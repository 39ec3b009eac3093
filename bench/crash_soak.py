"""Crash soak: SIGKILL the server 200 times at random moments while three writers create sessions and
messages, restart it each time, then check SQLite's integrity and that every acknowledged write is
there, unchanged. Prints one table.

    .venv/bin/python bench/crash_soak.py [--kills 200] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from common import prepare_data_dir  # noqa: F401 - puts the repository on sys.path

from tests.crash import Ledger, kill_cycle, verify
from tests.helpers import START_TIMEOUT_S, create_key, link_bundled_models, running_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    env = {"MOLTBOT_MONITOR": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        link_bundled_models(Path(tmp) / "cache", data_dir / "models")
        with running_server(data_dir, env) as first:
            first.wait_for_key(time.monotonic() + START_TIMEOUT_S)
        key = create_key(data_dir, "sessions", name="soak")
        ledger = Ledger()
        rng = random.Random(args.seed)
        started = time.monotonic()
        windows = [kill_cycle(data_dir, env, key, ledger, rng) for _ in range(args.kills)]
        integrity, lost = verify(data_dir, env, key, ledger)
        elapsed = time.monotonic() - started
    print(f"\nCrash soak: {args.kills} SIGKILLs, 3 concurrent writers, seed {args.seed}")
    print(
        f"{'kills':>6} {'sessions':>9} {'acked writes':>13} {'lost':>5} {'integrity':>10} {'write s':>8} {'total s':>8}"
    )
    print(
        f"{args.kills:>6} {len(ledger.sessions):>9} {ledger.writes:>13} {lost:>5} {integrity:>10} "
        f"{sum(windows):>8.0f} {elapsed:>8.0f}"
    )
    return 0 if lost == 0 and integrity == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
