from __future__ import annotations

import time
from pathlib import Path

import pytest

from moltbot.storage.database import open_database
from moltbot.storage.keys import KeyStore, Scope, UnknownScopeError, parse_scopes


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(open_database(tmp_path / "db.sqlite"))


def test_create_and_authenticate(keys: KeyStore) -> None:
    key, token = keys.create("me", frozenset({Scope.CHAT}))
    assert token.startswith("mb_")
    found = keys.authenticate(token)
    assert found is not None and found.id == key.id and found.scopes == {Scope.CHAT}


@pytest.mark.parametrize(
    "mangle", [lambda t: t + "x", lambda t: t[:-1], lambda t: "mb_nokey_x", lambda t: "", str.upper]
)
def test_wrong_tokens_fail(keys: KeyStore, mangle: object) -> None:
    _, token = keys.create("me", frozenset({Scope.CHAT}))
    assert callable(mangle)
    assert keys.authenticate(mangle(token)) is None


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    store = KeyStore(open_database(tmp_path / "db.sqlite"))
    _, token = store.create("me", frozenset({Scope.CHAT}))
    secret = token.split("_", 2)[2]  # mb_<id>_<secret>; the secret itself may contain "_"
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes()


def test_revoke_and_expiry(keys: KeyStore) -> None:
    key, token = keys.create("me", frozenset({Scope.CHAT}))
    assert keys.revoke(key.id)
    assert keys.authenticate(token) is None
    assert not keys.revoke(key.id)
    _, expired = keys.create("old", frozenset({Scope.CHAT}), expires_at=time.time() - 1)
    assert keys.authenticate(expired) is None


def test_admin_allows_everything(keys: KeyStore) -> None:
    key, _ = keys.create("root", frozenset({Scope.ADMIN}))
    assert all(key.allows(s) for s in Scope)
    assert keys.has_active_admin()


def test_parse_scopes() -> None:
    assert parse_scopes("chat, admin") == {Scope.CHAT, Scope.ADMIN}
    assert parse_scopes("models:read") == {Scope.MODELS_READ}
    with pytest.raises(UnknownScopeError):
        parse_scopes("chat,root")
    with pytest.raises(UnknownScopeError):
        parse_scopes(" , ")


def test_cache_serves_reads_and_revoke_clears_it(tmp_path: Path) -> None:
    engine = open_database(tmp_path / "db.sqlite")
    cached = KeyStore(engine, cache_ttl_s=60)
    key, token = cached.create("me", frozenset({Scope.CHAT}))
    assert cached.authenticate(token) is not None
    assert cached.authenticate(token + "x") is None  # a cached id still needs the right secret
    KeyStore(engine).revoke(key.id)  # another process: seen after the TTL only
    assert cached.authenticate(token) is not None
    cached.revoke(key.id)
    assert cached.authenticate(token) is None


def test_refresh_sees_revocations_from_elsewhere(tmp_path: Path) -> None:
    engine = open_database(tmp_path / "db.sqlite")
    cached = KeyStore(engine, cache_ttl_s=60)
    key, token = cached.create("me", frozenset({Scope.CHAT}))
    assert cached.authenticate(token) is not None
    KeyStore(engine).revoke(key.id)
    cached.refresh()
    assert cached.authenticate(token) is None
