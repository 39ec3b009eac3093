"""Sessions and messages in the database. Every user-owned value (titles, metadata, system prompts,
message contents) is encrypted by the vault, bound to its table, column and row; every query is
scoped to the owning API key, so another key's session simply does not exist."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from moltbot.storage.crypto import Vault
from moltbot.storage.database import guarded_writing as _writing
from moltbot.storage.schema import messages, sessions


@dataclass(slots=True, frozen=True)
class Message:
    id: str
    session_id: str
    seq: int
    role: str
    content: str
    status: str
    created_at: float


@dataclass(slots=True, frozen=True)
class Session:
    id: str
    key_id: str
    model: str
    title: str | None
    metadata: dict[str, Any]
    system_prompt: str | None
    created_at: float
    updated_at: float
    message_count: int = 0
    messages: list[Message] = field(default_factory=list)


UNSET: Any = object()
ANY_OWNER: Any = None  # operators (the CLI) pass this for the owner: every key's sessions


def _owned(session_id: str, key_id: str | None) -> list[Any]:
    conditions = [sessions.c.id == session_id]
    if key_id is not None:
        conditions.append(sessions.c.key_id == key_id)
    return conditions


class SessionRepository:
    def __init__(self, engine: Engine, vault: Vault) -> None:
        self._engine = engine
        self._vault = vault

    # -- encryption of one session row -----------------------------------------------------------

    def _seal(self, session_id: str, column: str, value: str | None) -> bytes | None:
        return None if value is None else self._vault.encrypt_text(value, "sessions", column, session_id)

    def _open(self, session_id: str, column: str, value: bytes | None) -> str | None:
        return None if value is None else self._vault.decrypt_text(value, "sessions", column, session_id)

    def _session(self, row: Any, count: int) -> Session:
        meta = self._open(row.id, "meta", row.meta)
        return Session(
            id=row.id,
            key_id=row.key_id,
            model=row.model,
            title=self._open(row.id, "title", row.title),
            metadata=json.loads(meta) if meta else {},
            system_prompt=self._open(row.id, "system_prompt", row.system_prompt),
            created_at=row.created_at,
            updated_at=row.updated_at,
            message_count=count,
        )

    def _message(self, row: Any) -> Message:
        content = self._vault.decrypt_text(row.content, "messages", "content", row.id)
        return Message(row.id, row.session_id, row.seq, row.role, content, row.status, row.created_at)

    # -- sessions --------------------------------------------------------------------------------

    def create(
        self,
        key_id: str,
        model: str,
        *,
        title: str | None = None,
        metadata: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        created_at: float | None = None,
    ) -> Session:
        session_id = f"sess_{secrets.token_hex(12)}"
        now = time.time() if created_at is None else created_at
        with _writing(self._engine) as conn:
            conn.execute(
                insert(sessions).values(
                    id=session_id,
                    key_id=key_id,
                    model=model,
                    title=self._seal(session_id, "title", title),
                    meta=self._seal(session_id, "meta", json.dumps(metadata) if metadata else None),
                    system_prompt=self._seal(session_id, "system_prompt", system_prompt),
                    created_at=now,
                    updated_at=now,
                )
            )
        return Session(session_id, key_id, model, title, metadata or {}, system_prompt, now, now)

    def get(self, key_id: str | None, session_id: str, *, with_messages: bool = False) -> Session | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(sessions).where(*_owned(session_id, key_id))).first()
            if row is None:
                return None
            found: list[Message] = []
            if with_messages:
                query = select(messages).where(messages.c.session_id == session_id).order_by(messages.c.seq)
                found = [self._message(r) for r in conn.execute(query)]
            count = len(found) if with_messages else self._count(conn, session_id)
        session = self._session(row, count)
        if with_messages:
            session.messages.extend(found)
        return session

    @staticmethod
    def _count(conn: Connection, session_id: str) -> int:
        query = select(func.count()).select_from(messages).where(messages.c.session_id == session_id)
        return int(conn.execute(query).scalar_one())

    def list(self, key_id: str | None, limit: int, before: tuple[float, str] | None = None) -> list[Session]:
        """Newest first; `before` is the (created_at, id) of the last session of the previous page."""
        counts = select(messages.c.session_id, func.count().label("n")).group_by(messages.c.session_id).subquery()
        query = (
            select(sessions, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.session_id == sessions.c.id)
            .order_by(sessions.c.created_at.desc(), sessions.c.id.desc())
            .limit(limit)
        )
        if key_id is not None:
            query = query.where(sessions.c.key_id == key_id)
        if before is not None:
            created, last_id = before
            query = query.where(
                (sessions.c.created_at < created) | ((sessions.c.created_at == created) & (sessions.c.id < last_id))
            )
        with self._engine.connect() as conn:
            return [self._session(row, int(row[-1])) for row in conn.execute(query)]

    def update(
        self, key_id: str, session_id: str, *, title: str | None = UNSET, metadata: dict[str, Any] | None = UNSET
    ) -> Session | None:
        values: dict[str, Any] = {"updated_at": time.time()}
        if title is not UNSET:
            values["title"] = self._seal(session_id, "title", title)
        if metadata is not UNSET:
            values["meta"] = self._seal(session_id, "meta", json.dumps(metadata) if metadata else None)
        with _writing(self._engine) as conn:
            result = conn.execute(
                update(sessions).where(sessions.c.id == session_id, sessions.c.key_id == key_id).values(**values)
            )
        return self.get(key_id, session_id) if result.rowcount else None

    def delete(self, key_id: str | None, session_id: str) -> bool:
        with _writing(self._engine) as conn:
            owned = conn.execute(select(sessions.c.id).where(*_owned(session_id, key_id))).first()
            if owned is None:
                return False
            conn.execute(delete(messages).where(messages.c.session_id == session_id))
            conn.execute(delete(sessions).where(sessions.c.id == session_id))
        return True

    # -- messages --------------------------------------------------------------------------------

    def add_message(
        self,
        key_id: str,
        session_id: str,
        role: str,
        content: str,
        *,
        status: str = "complete",
        created_at: float | None = None,
    ) -> Message | None:
        """Append a message, durable when this returns; None when the session is not this key's."""
        message_id = f"msg_{secrets.token_hex(12)}"
        sealed = self._vault.encrypt_text(content, "messages", "content", message_id)
        now = time.time() if created_at is None else created_at
        with _writing(self._engine) as conn:
            # Concurrent appends are ordered by the session's row lock on PostgreSQL and by the write
            # lock BEGIN IMMEDIATE takes on SQLite: the max(seq) read is never stale, nothing retries.
            owned = conn.execute(
                select(sessions.c.id).where(sessions.c.id == session_id, sessions.c.key_id == key_id).with_for_update()
            ).first()
            if owned is None:
                return None
            last = conn.execute(select(func.max(messages.c.seq)).where(messages.c.session_id == session_id)).scalar()
            seq = 0 if last is None else int(last) + 1
            values = {"session_id": session_id, "seq": seq, "role": role, "status": status, "created_at": now}
            conn.execute(insert(messages).values(id=message_id, content=sealed, **values))
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(updated_at=now))
        return Message(message_id, session_id, seq, role, content, status, now)

    def import_session(
        self, key_id: str, model: str, data: dict[str, Any], history: Sequence[dict[str, Any]]
    ) -> Session:
        """A new session (new ids, this key) holding an exported one's fields and messages, in one transaction."""
        session = self.create(
            key_id,
            model,
            title=data.get("title"),
            metadata=data.get("metadata") or None,
            system_prompt=data.get("system_prompt"),
        )
        try:
            with _writing(self._engine) as conn:
                for seq, item in enumerate(history):
                    message_id = f"msg_{secrets.token_hex(12)}"
                    conn.execute(
                        insert(messages).values(
                            id=message_id,
                            session_id=session.id,
                            seq=seq,
                            role=item["role"],
                            content=self._vault.encrypt_text(item["content"], "messages", "content", message_id),
                            status=item.get("status", "complete"),
                            created_at=float(item.get("created_at") or time.time()),
                        )
                    )
        except BaseException:
            self.delete(key_id, session.id)
            raise
        found = self.get(key_id, session.id, with_messages=True)
        assert found is not None  # noqa: S101 - just written
        return found
