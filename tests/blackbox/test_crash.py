"""Crash safety: 30 SIGKILLs at random moments under concurrent writers; nothing acknowledged is lost.
(bench/crash_soak.py runs 200.)"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from tests.crash import Ledger, kill_cycle, verify
from tests.helpers import START_TIMEOUT_S, create_key, running_server

KILLS = 30


def test_sigkill_loses_no_acknowledged_write(make_data_dir: Callable[..., Path]) -> None:
    data_dir = make_data_dir("crash")
    env = {"MOLTBOT_MONITOR": "false"}
    with running_server(data_dir, env) as first:  # first start: keys, KEK, schema
        first.wait_for_key(time.monotonic() + START_TIMEOUT_S)
    key = create_key(data_dir, "sessions", name="writers")
    ledger = Ledger()
    rng = random.Random(20261125)
    for _ in range(KILLS):
        kill_cycle(data_dir, env, key, ledger, rng)
    integrity, lost = verify(data_dir, env, key, ledger)
    assert integrity == "ok"
    assert ledger.writes >= KILLS  # the writers did get work acknowledged between kills
    assert lost == 0, f"{lost} of {ledger.writes} acknowledged writes lost"
