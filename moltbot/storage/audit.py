"""The audit log: who did which administrative action when. Append-only (the database refuses
changes); entries hold ids and names, never a token, a key hash or user content."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select

from moltbot.storage.schema import audit_log


@dataclass(slots=True, frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, actor: str, action: str, target: str, **details: Any) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(audit_log).values(
                    at=time.time(), actor=actor, action=action, target=target, details=json.dumps(details)
                )
            )

    def list(self, limit: int = 100, before: int | None = None) -> list[AuditEntry]:
        """Newest first; `before` pages back from an entry id."""
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        with self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            AuditEntry(r["id"], r["at"], r["actor"], r["action"], r["target"], json.loads(r["details"])) for r in rows
        ]
