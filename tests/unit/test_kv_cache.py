from __future__ import annotations

from moltbot.engine.kv_cache import HostKVCache


def test_longest_prefix_wins_and_limit_applies() -> None:
    cache = HostKVCache(budget_bytes=1000)
    cache.put((1, 2, 3), bytearray(b"a" * 10))
    cache.put((1, 2, 9, 9), bytearray(b"b" * 10))
    state, shared = cache.best((1, 2, 3, 4), limit=10)
    assert state is not None and state.tokens == (1, 2, 3) and shared == 3
    _, shared = cache.best((1, 2, 3, 4), limit=2)
    assert shared == 2
    assert cache.best((7,), limit=5) == (None, 0)


def test_lru_eviction_by_bytes() -> None:
    cache = HostKVCache(budget_bytes=25)
    cache.put((1,), bytearray(b"x" * 10))
    cache.put((2,), bytearray(b"y" * 10))
    cache.put((3,), bytearray(b"z" * 10))
    assert len(cache) == 2 and cache.bytes == 20 and cache.evictions == 1
    assert cache.best((1,), limit=1) == (None, 0)


def test_refuses_a_state_larger_than_the_budget() -> None:
    cache = HostKVCache(budget_bytes=5)
    assert not cache.put((1,), bytearray(b"x" * 10))
    assert len(cache) == 0 and cache.bytes == 0


def test_a_longer_state_replaces_its_prefixes() -> None:
    cache = HostKVCache(budget_bytes=100)
    cache.put((1, 2), bytearray(b"a" * 10))
    cache.put((1, 2, 3), bytearray(b"b" * 12))
    assert len(cache) == 1 and cache.bytes == 12


def test_take_removes_the_state() -> None:
    cache = HostKVCache(budget_bytes=100)
    cache.put((1, 2), bytearray(b"a" * 10))
    state, _ = cache.best((1, 2, 3), limit=5)
    assert state is not None
    cache.take(state)
    assert len(cache) == 0 and cache.bytes == 0


def test_a_shared_preamble_does_not_match_another_conversation() -> None:
    cache = HostKVCache(budget_bytes=1000)
    preamble = tuple(range(10))
    cache.put((*preamble, *range(100, 130)), bytearray(b"a" * 10))  # another conversation: 40 tokens
    assert cache.best((*preamble, 7, 7, 7), limit=100) == (None, 0)
