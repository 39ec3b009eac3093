"""Stored responses of the Responses API: owner-scoped, the response object and its input items sealed
with AES-256-GCM (bound to their row), chained by `previous_id`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from moltbot.storage.crypto import Vault
from moltbot.storage.database import guarded_writing
from moltbot.storage.schema import responses


@dataclass(slots=True, frozen=True)
class StoredResponse:
    id: str
    key_id: str
    model: str
    previous_id: str | None
    status: str
    document: dict[str, Any]  # the response object as it was answered
    input: list[dict[str, Any]]  # its input items (with ids)
    created_at: float


class ResponseRepository:
    def __init__(self, engine: Engine, vault: Vault) -> None:
        self._engine = engine
        self._vault = vault

    def _seal(self, response_id: str, column: str, value: Any) -> bytes:
        return self._vault.encrypt_text(json.dumps(value, ensure_ascii=False), "responses", column, response_id)

    def _open(self, response_id: str, column: str, blob: bytes) -> Any:
        return json.loads(self._vault.decrypt_text(blob, "responses", column, response_id))

    def save(
        self,
        key_id: str,
        response_id: str,
        *,
        model: str,
        previous_id: str | None,
        status: str,
        document: dict[str, Any],
        items: list[dict[str, Any]],
    ) -> None:
        with guarded_writing(self._engine) as conn:
            conn.execute(
                insert(responses).values(
                    id=response_id,
                    key_id=key_id,
                    model=model,
                    previous_id=previous_id,
                    status=status,
                    document=self._seal(response_id, "document", document),
                    input=self._seal(response_id, "input", items),
                    created_at=time.time(),
                )
            )

    def get(self, key_id: str, response_id: str) -> StoredResponse | None:
        """The response if it is this key's (another key's is not found either)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(responses).where(responses.c.id == response_id, responses.c.key_id == key_id)
            ).first()
        if row is None:
            return None
        return StoredResponse(
            id=row.id,
            key_id=row.key_id,
            model=row.model,
            previous_id=row.previous_id,
            status=row.status,
            document=self._open(row.id, "document", row.document),
            input=self._open(row.id, "input", row.input),
            created_at=row.created_at,
        )

    def delete(self, key_id: str, response_id: str) -> bool:
        with guarded_writing(self._engine) as conn:
            result = conn.execute(delete(responses).where(responses.c.id == response_id, responses.c.key_id == key_id))
        return bool(result.rowcount)
