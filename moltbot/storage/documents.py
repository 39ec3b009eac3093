"""Uploaded documents: the job's state, the original, each page's text and the chunks, owner-scoped.

The name, the original file, page texts and chunks are sealed with AES-256-GCM, bound to their row.
A page is stored once (a resumed job skips the pages it finds); chunks are replaced as a whole.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from moltbot.storage.crypto import Vault
from moltbot.storage.database import guarded_writing
from moltbot.storage.graph import remove_document_graph
from moltbot.storage.schema import document_chunks, document_files, document_pages, documents

ACTIVE = ("queued", "running")


def new_document_id() -> str:
    return f"doc_{secrets.token_hex(12)}"


@dataclass(slots=True, frozen=True)
class DocumentRow:
    id: str
    key_id: str
    name: str
    media_type: str
    size_bytes: int
    pages: int
    status: str
    stage: str
    pages_done: int
    pages_failed: int
    pipeline: str
    languages: str
    language: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None


@dataclass(slots=True, frozen=True)
class PageRow:
    page: int
    method: str
    confidence: float
    seconds: float
    error: str | None
    text: str | None  # None when not asked for


@dataclass(slots=True, frozen=True)
class ChunkRow:
    index: int
    page: int | None
    start: int
    stop: int
    tokens: int
    text: str


class DocumentRepository:
    def __init__(self, engine: Engine, vault: Vault) -> None:
        self._engine = engine
        self._vault = vault

    # -- documents -------------------------------------------------------------------------------

    def create(
        self,
        key_id: str,
        *,
        name: str,
        media_type: str,
        content: bytes,
        pages: int,
        pipeline: str,
        languages: str,
    ) -> DocumentRow:
        document_id = new_document_id()
        now = time.time()
        with guarded_writing(self._engine) as conn:
            conn.execute(
                insert(documents).values(
                    id=document_id,
                    key_id=key_id,
                    name=self._vault.encrypt_text(name, "documents", "name", document_id),
                    media_type=media_type,
                    size_bytes=len(content),
                    pages=pages,
                    status="queued",
                    stage="queued",
                    pages_done=0,
                    pages_failed=0,
                    pipeline=pipeline,
                    languages=languages,
                    created_at=now,
                    updated_at=now,
                )
            )
            conn.execute(
                insert(document_files).values(
                    document_id=document_id,
                    content=self._vault.encrypt(content, "document_files", "content", document_id),
                )
            )
        row = self.get(key_id, document_id)
        assert row is not None  # noqa: S101 - just written
        return row

    def _row(self, row: Any) -> DocumentRow:
        return DocumentRow(
            id=row.id,
            key_id=row.key_id,
            name=self._vault.decrypt_text(row.name, "documents", "name", row.id),
            media_type=row.media_type,
            size_bytes=row.size_bytes,
            pages=row.pages,
            status=row.status,
            stage=row.stage,
            pages_done=row.pages_done,
            pages_failed=row.pages_failed,
            pipeline=row.pipeline,
            languages=row.languages,
            language=row.language,
            error=row.error,
            created_at=row.created_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
        )

    def get(self, key_id: str | None, document_id: str) -> DocumentRow | None:
        """The document if it is this key's (`key_id` None: any owner, for the job runner)."""
        query = select(documents).where(documents.c.id == document_id)
        if key_id is not None:
            query = query.where(documents.c.key_id == key_id)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else self._row(row)

    def page(self, key_id: str, limit: int, before: float | None = None) -> list[DocumentRow]:
        query = select(documents).where(documents.c.key_id == key_id)
        if before is not None:
            query = query.where(documents.c.created_at < before)
        query = query.order_by(documents.c.created_at.desc()).limit(limit)
        with self._engine.connect() as conn:
            return [self._row(row) for row in conn.execute(query)]

    def unfinished(self) -> list[str]:
        """Documents whose job is queued or was running when the server stopped, oldest first."""
        query = select(documents.c.id).where(documents.c.status.in_(ACTIVE)).order_by(documents.c.created_at)
        with self._engine.connect() as conn:
            return [row.id for row in conn.execute(query)]

    def delete(self, key_id: str, document_id: str) -> bool:
        with guarded_writing(self._engine) as conn:
            owned = conn.execute(
                select(documents.c.id).where(documents.c.id == document_id, documents.c.key_id == key_id)
            ).first()
            if owned is None:
                return False
            remove_document_graph(conn, key_id, document_id)
            for table in (document_chunks, document_pages, document_files):
                conn.execute(delete(table).where(table.c.document_id == document_id))
            conn.execute(delete(documents).where(documents.c.id == document_id))
        return True

    def content(self, document_id: str) -> bytes:
        with self._engine.connect() as conn:
            blob = conn.execute(
                select(document_files.c.content).where(document_files.c.document_id == document_id)
            ).scalar_one()
        return self._vault.decrypt(blob, "document_files", "content", document_id)

    def set_state(
        self,
        document_id: str,
        *,
        status: str,
        stage: str,
        error: str | None = None,
        language: str | None = None,
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {"status": status, "stage": stage, "error": error, "updated_at": now}
        if language is not None:
            values["language"] = language
        if status in ("done", "failed"):
            values["finished_at"] = now
        with guarded_writing(self._engine) as conn:
            conn.execute(update(documents).where(documents.c.id == document_id).values(**values))

    def set_summary(self, document_id: str, summary: dict[str, Any]) -> None:
        sealed = self._vault.encrypt_text(json.dumps(summary, ensure_ascii=False), "documents", "summary", document_id)
        with guarded_writing(self._engine) as conn:
            conn.execute(update(documents).where(documents.c.id == document_id).values(summary=sealed))

    def summary(self, document_id: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            blob = conn.execute(select(documents.c.summary).where(documents.c.id == document_id)).scalar()
        if blob is None:
            return None
        value: dict[str, Any] = json.loads(self._vault.decrypt_text(blob, "documents", "summary", document_id))
        return value

    # -- pages -----------------------------------------------------------------------------------

    def done_pages(self, document_id: str) -> set[int]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(document_pages.c.page).where(document_pages.c.document_id == document_id))
            return {row.page for row in rows}

    def save_page(self, document_id: str, result: dict[str, Any]) -> bool:
        """Store one page's result and count it; False when the page was stored already or the document
        is gone (deleted while its job ran)."""
        number = int(result["page"])
        row_id = f"{document_id}/{number:06d}"
        failed = result.get("error") is not None
        with guarded_writing(self._engine) as conn:
            exists = conn.execute(select(documents.c.id).where(documents.c.id == document_id)).first()
            if exists is None or conn.execute(select(document_pages.c.id).where(document_pages.c.id == row_id)).first():
                return False
            conn.execute(
                insert(document_pages).values(
                    id=row_id,
                    document_id=document_id,
                    page=number,
                    method=str(result["method"]),
                    confidence=float(result["confidence"]),
                    seconds=float(result["seconds"]),
                    error=str(result["error"])[:500] if failed else None,
                    text=self._vault.encrypt_text(str(result["text"]), "document_pages", "text", row_id),
                )
            )
            counts = conn.execute(
                select(func.count(), func.count(document_pages.c.error)).where(
                    document_pages.c.document_id == document_id
                )
            ).one()
            conn.execute(
                update(documents)
                .where(documents.c.id == document_id)
                .values(pages_done=counts[0] - counts[1], pages_failed=counts[1], updated_at=time.time())
            )
        return True

    def pages(self, document_id: str, *, with_text: bool) -> list[PageRow]:
        columns = [
            document_pages.c.id,
            document_pages.c.page,
            document_pages.c.method,
            document_pages.c.confidence,
            document_pages.c.seconds,
            document_pages.c.error,
        ]
        if with_text:
            columns.append(document_pages.c.text)
        query = select(*columns).where(document_pages.c.document_id == document_id).order_by(document_pages.c.page)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            PageRow(
                row.page,
                row.method,
                row.confidence,
                row.seconds,
                row.error,
                self._vault.decrypt_text(row.text, "document_pages", "text", row.id) if with_text else None,
            )
            for row in rows
        ]

    # -- chunks ----------------------------------------------------------------------------------

    def replace_chunks(self, document_id: str, chunks: list[ChunkRow]) -> None:
        with guarded_writing(self._engine) as conn:
            conn.execute(delete(document_chunks).where(document_chunks.c.document_id == document_id))
            values = []
            for chunk in chunks:
                row_id = f"{document_id}/{chunk.index:06d}"
                values.append(
                    {
                        "id": row_id,
                        "document_id": document_id,
                        "idx": chunk.index,
                        "page": chunk.page,
                        "start": chunk.start,
                        "stop": chunk.stop,
                        "tokens": chunk.tokens,
                        "text": self._vault.encrypt_text(chunk.text, "document_chunks", "text", row_id),
                    }
                )
            if values:
                conn.execute(insert(document_chunks), values)

    def set_embeddings(self, document_id: str, vectors: dict[int, bytes]) -> None:
        """Each chunk's embedding (float32 bytes), by chunk index."""
        with guarded_writing(self._engine) as conn:
            for index, vector in vectors.items():
                row_id = f"{document_id}/{index:06d}"
                sealed = self._vault.encrypt(vector, "document_chunks", "embedding", row_id)
                conn.execute(update(document_chunks).where(document_chunks.c.id == row_id).values(embedding=sealed))

    def searchable(self, key_id: str, document_ids: list[str] | None) -> list[tuple[str, str, ChunkRow, bytes]]:
        """The owner's finished documents' chunks with their embeddings: (document id, its name, chunk,
        float32 vector bytes)."""
        query = (
            select(document_chunks, documents.c.name.label("document_name"))
            .join(documents, documents.c.id == document_chunks.c.document_id)
            .where(documents.c.key_id == key_id, documents.c.status == "done", document_chunks.c.embedding.is_not(None))
        )
        if document_ids is not None:
            query = query.where(documents.c.id.in_(document_ids))
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(document_chunks.c.document_id, document_chunks.c.idx)).all()
        found = []
        names: dict[str, str] = {}
        for row in rows:
            if row.document_id not in names:
                names[row.document_id] = self._vault.decrypt_text(
                    row.document_name, "documents", "name", row.document_id
                )
            chunk = self._chunk(row)
            vector = self._vault.decrypt(row.embedding, "document_chunks", "embedding", row.id)
            found.append((row.document_id, names[row.document_id], chunk, vector))
        return found

    def chunks(self, document_id: str) -> list[ChunkRow]:
        query = select(document_chunks).where(document_chunks.c.document_id == document_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(document_chunks.c.idx)).all()
        return [self._chunk(row) for row in rows]

    def _chunk(self, row: Any) -> ChunkRow:
        text = self._vault.decrypt_text(row.text, "document_chunks", "text", row.id)
        return ChunkRow(row.idx, row.page, row.start, row.stop, row.tokens, text)
