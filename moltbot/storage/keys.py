"""API keys: random 256-bit tokens with an identifying prefix, stored as SHA-256 hashes only."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, RowMapping, insert, select, update

from moltbot.storage.schema import api_keys

TOKEN_PREFIX = "mb_"  # noqa: S105 - a public prefix, not a secret


class Scope(enum.StrEnum):
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    SESSIONS = "sessions"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    METRICS = "metrics"
    DOCUMENTS = "documents"
    AUDIO = "audio"
    ADMIN = "admin"


DEFAULT_SCOPES = frozenset({Scope.CHAT, Scope.EMBEDDINGS, Scope.AUDIO, Scope.MODELS_READ})


class UnknownScopeError(ValueError):
    pass


def parse_scopes(text: str) -> frozenset[Scope]:
    """Parse `chat,admin` into scopes; raises UnknownScopeError naming a bad one."""
    scopes: set[Scope] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            scopes.add(Scope(part))
        except ValueError:
            raise UnknownScopeError(f"unknown scope {part!r}; known: {', '.join(s.value for s in Scope)}") from None
    if not scopes:
        raise UnknownScopeError("at least one scope is required")
    return frozenset(scopes)


@dataclass(slots=True, frozen=True)
class ApiKey:
    id: str
    name: str
    scopes: frozenset[Scope]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes

    def is_active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _key_id(token: str) -> str | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, _ = token[len(TOKEN_PREFIX) :].partition("_")
    return key_id if sep and key_id else None


class KeyStore:
    """Creates, checks, lists and revokes API keys.

    `authenticate` keeps what it read for `cache_ttl_s` (a database read costs more than the rest of the
    gateway): a key revoked by another process (the CLI) stops working within that time; one revoked
    through this store stops at once.
    """

    def __init__(self, engine: Engine, cache_ttl_s: float = 0.0) -> None:
        self._engine = engine
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[float, str, ApiKey]] = {}

    def create(self, name: str, scopes: frozenset[Scope], expires_at: float | None = None) -> tuple[ApiKey, str]:
        """Create a key; the token is returned once and never stored."""
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, scopes, time.time(), expires_at)
        with self._engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    hash=_hash(token),
                    scopes=",".join(sorted(s.value for s in scopes)),
                    created_at=key.created_at,
                    expires_at=expires_at,
                )
            )
        return key, token

    def authenticate(self, token: str) -> ApiKey | None:
        """The active key this token belongs to, or None."""
        key_id = _key_id(token)
        if key_id is None:
            return None
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or now - cached[0] > self._ttl:
            with self._engine.connect() as conn:
                row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
            if row is None:
                return None
            cached = (now, row["hash"], _from_row(row))
            if self._ttl > 0:
                self._cache[key_id] = cached
        _, stored_hash, key = cached
        if not hmac.compare_digest(stored_hash, _hash(token)):
            return None
        return key if key.is_active(time.time()) else None

    def refresh(self) -> None:
        """Re-read every cached key in one query, so requests find them fresh (run off the request path)."""
        ids = list(self._cache)
        if not ids:
            return
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).where(api_keys.c.id.in_(ids))).mappings().all()
        now = time.monotonic()
        found = {row["id"]: (now, row["hash"], _from_row(row)) for row in rows}
        for key_id in ids:
            if key_id in found:
                self._cache[key_id] = found[key_id]
            else:
                self._cache.pop(key_id, None)

    def get(self, key_id: str) -> ApiKey | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return None if row is None else _from_row(row)

    def list(self) -> list[ApiKey]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
        return [_from_row(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        self._cache.pop(key_id, None)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=time.time())
            )
        return result.rowcount > 0

    def has_active_admin(self) -> bool:
        now = time.time()
        return any(k.allows(Scope.ADMIN) and k.is_active(now) for k in self.list())


def _from_row(r: RowMapping) -> ApiKey:
    return ApiKey(
        id=r["id"],
        name=r["name"],
        scopes=frozenset(Scope(s) for s in r["scopes"].split(",") if s),
        created_at=r["created_at"],
        expires_at=r["expires_at"],
        revoked_at=r["revoked_at"],
    )
