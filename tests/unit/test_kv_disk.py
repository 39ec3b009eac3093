"""The disk tier of the KV cache: sealed files, LRU by bytes, states of another model or damaged files
ignored and removed; the host tier spills into it."""

from __future__ import annotations

from pathlib import Path

from moltbot.app import VaultSealer
from moltbot.engine.kv_cache import HostKVCache
from moltbot.engine.kv_disk import DiskKVCache
from moltbot.storage.crypto import Vault
from moltbot.storage.database import open_database


def sealer(tmp_path: Path) -> VaultSealer:
    return VaultSealer(Vault(open_database(tmp_path / "db.sqlite"), tmp_path / "kek"))


def test_put_best_load_and_survive_a_reopen(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    disk = DiskKVCache(tmp_path / "kv", 10_000, "model-a", seal)
    tokens = tuple(range(100))
    assert disk.put(tokens, b"state-bytes" * 10)
    assert b"state-bytes" not in b"".join(p.read_bytes() for p in (tmp_path / "kv").iterdir())  # sealed
    reopened = DiskKVCache(tmp_path / "kv", 10_000, "model-a", seal)
    name, shared = reopened.best((*tokens, 7, 8), 200)
    assert shared == 100 and name is not None
    assert reopened.load(name) == bytearray(b"state-bytes" * 10)
    assert reopened.best(tuple(range(1000, 1100)), 200) == (None, 0)


def test_longer_states_replace_their_prefixes_and_lru_respects_the_budget(tmp_path: Path) -> None:
    disk = DiskKVCache(tmp_path / "kv", 700, "m", sealer(tmp_path))
    disk.put(tuple(range(10)), b"a" * 100)
    disk.put(tuple(range(20)), b"b" * 100)  # extends the first: it replaces it
    assert len(disk) == 1
    for i in range(10):
        disk.put(tuple(range(1000 * (i + 1), 1000 * (i + 1) + 10)), b"c" * 100)
    assert disk.bytes <= 700 and len(list((tmp_path / "kv").glob("*.kv"))) == len(disk)
    assert disk.best(tuple(range(20)), 30) == (None, 0)  # the oldest went first


def test_other_models_and_damaged_files_are_ignored_and_removed(tmp_path: Path) -> None:
    seal = sealer(tmp_path)
    disk = DiskKVCache(tmp_path / "kv", 10_000, "model-a", seal)
    disk.put(tuple(range(50)), b"x" * 100)
    disk.put(tuple(range(100, 150)), b"y" * 100)
    assert len(DiskKVCache(tmp_path / "kv", 10_000, "model-b", seal)) == 0  # another model's: removed
    assert not list((tmp_path / "kv").iterdir())
    disk = DiskKVCache(tmp_path / "kv", 10_000, "model-a", seal)
    disk.put(tuple(range(50)), b"x" * 100)
    (kv_file,) = (tmp_path / "kv").glob("*.kv")
    damaged = bytearray(kv_file.read_bytes())
    damaged[-1] ^= 1
    kv_file.write_bytes(bytes(damaged))
    name, _ = disk.best(tuple(range(60)), 60)
    assert name is not None and disk.load(name) is None  # refused, and forgotten
    assert len(disk) == 0 and not list((tmp_path / "kv").glob("*.kv"))
    (tmp_path / "kv" / "junk.meta").write_bytes(b"not sealed")
    (tmp_path / "kv" / ".half-written.kv.tmp").write_bytes(b"torn")
    assert len(DiskKVCache(tmp_path / "kv", 10_000, "model-a", seal)) == 0
    assert not list((tmp_path / "kv").iterdir())


def test_the_host_tier_spills_into_the_disk_tier(tmp_path: Path) -> None:
    disk = DiskKVCache(tmp_path / "kv", 10_000, "m", sealer(tmp_path))
    host = HostKVCache(250, spill=lambda state: disk.put(state.tokens, state.data))
    host.put(tuple(range(10)), bytearray(b"1" * 100))
    host.put(tuple(range(100, 110)), bytearray(b"2" * 100))
    host.put(tuple(range(200, 210)), bytearray(b"3" * 100))  # over budget: the oldest goes to disk
    assert len(host) == 2 and len(disk) == 1
    name, shared = disk.best(tuple(range(12)), 12)
    assert shared == 10 and name is not None and disk.load(name) == bytearray(b"1" * 100)
