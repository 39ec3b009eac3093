"""DocumentService: uploads and their processing job (extract -> preprocess), durable and resumable.

Upload: the file is opened by a worker subprocess first (its type and page count; a damaged,
encrypted or oversized file is a 400 and nothing is stored), then stored encrypted with a queued job.
The job runs in the background, one document at a time (OCR takes a core): the pages not stored yet go
through the worker (runner.py: text layer or OCR, each page bounded in time and memory), each page is
stored as it arrives, then the document's pipeline (moltbot/pipelines) makes its chunks, then the
instruct model summarizes it (services/summaries.py; an error there is recorded in the summary and
the document is still done), then its entities and relations go into the owner's knowledge graph
(services/graph.py). The state is
in the database, so a server stopped mid-job resumes after the last stored page when it starts again;
a page that fails is recorded as failed and the others go on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from moltbot.documents import runner
from moltbot.documents.extract import installed_languages
from moltbot.errors import InvalidRequestError, MoltbotError
from moltbot.pipelines import PRESETS, Document
from moltbot.services.ask import AskService
from moltbot.services.graph import GraphService
from moltbot.services.pipelines import PipelineService
from moltbot.services.summaries import Summarizer
from moltbot.storage.documents import ChunkRow, DocumentRepository, DocumentRow, PageRow

log = logging.getLogger(__name__)
_MAX_NAME = 255
T = TypeVar("T")


class DocumentNotFoundError(MoltbotError):
    """No such document for this key (another key's is not found either): a 404."""


@dataclass(slots=True, frozen=True)
class DocumentLimits:
    max_bytes: int = 64 << 20
    max_pages: int = 1000
    languages: str = "eng"
    dpi: int = 300
    worker: runner.WorkerLimits = field(default_factory=runner.WorkerLimits)


def card(row: DocumentRow, eta_seconds: float | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "document",
        "name": row.name,
        "media_type": row.media_type,
        "size_bytes": row.size_bytes,
        "pages": row.pages,
        "status": row.status,
        "stage": row.stage,
        "pages_done": row.pages_done,
        "pages_failed": row.pages_failed,
        "pipeline": row.pipeline,
        "languages": row.languages,
        "language": row.language,
        "error": row.error,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
        "eta_seconds": None if eta_seconds is None else round(eta_seconds, 1),
    }


class DocumentService:
    def __init__(
        self,
        repository: DocumentRepository,
        pipelines: PipelineService,
        limits: DocumentLimits,
        *,
        summarizer: Summarizer | None = None,
        graph: GraphService | None = None,
        asker: AskService | None = None,
    ) -> None:
        self.repository = repository
        self.asker = asker  # None: chunks are not embedded, questions cannot be asked
        self.graph = graph  # None: documents are not read into the knowledge graph
        self.pipelines = pipelines
        self.limits = limits
        self.summarizer = summarizer  # None: documents get no summary
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self._cancelled: dict[str, threading.Event] = {}
        self._rate: dict[str, tuple[float, int]] = {}  # seconds and pages of this run, for the ETA
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for document_id in await anyio.to_thread.run_sync(self.repository.unfinished):
            self._queue.put_nowait(document_id)
        self._task = asyncio.create_task(self._work(), name="document-jobs")

    async def stop(self) -> None:
        for event in self._cancelled.values():
            event.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- requests --------------------------------------------------------------------------------

    async def upload(
        self, owner: str, name: str, data: bytes, pipeline: str | None, languages: str | None
    ) -> dict[str, Any]:
        pipeline = pipeline or "documents"
        if pipeline not in PRESETS:
            raise InvalidRequestError(
                f"unknown pipeline {pipeline!r}; shipped: {', '.join(sorted(PRESETS))}", "pipeline"
            )
        languages = languages or self.limits.languages
        known = installed_languages()
        wanted = languages.split("+")
        if not 0 < len(wanted) <= 4 or any(lang not in known for lang in wanted):
            raise InvalidRequestError(
                f"languages: OCR languages joined by '+', of those installed: {', '.join(sorted(known)) or 'none'}",
                "languages",
                code="invalid_languages",
            )
        if not data:
            raise runner.DocumentRejectedError("the file is empty")
        if len(data) > self.limits.max_bytes:
            raise runner.DocumentRejectedError(f"the file is larger than {self.limits.max_bytes} bytes")
        probe = await anyio.to_thread.run_sync(runner.probe, data, self.limits.worker)
        if probe.pages < 1:
            raise runner.DocumentRejectedError("the document has no pages")
        if probe.pages > self.limits.max_pages:
            raise runner.DocumentRejectedError(
                f"the document has {probe.pages} pages; at most {self.limits.max_pages} are accepted"
            )
        clean = "".join(c for c in name if c.isprintable())[:_MAX_NAME] or "document"
        row = await anyio.to_thread.run_sync(
            lambda: self.repository.create(
                owner,
                name=clean,
                media_type=probe.media_type,
                content=data,
                pages=probe.pages,
                pipeline=pipeline,
                languages=languages,
            )
        )
        self._queue.put_nowait(row.id)
        log.info("document %s: %d pages (%s) queued", row.id, row.pages, row.media_type)
        return card(row)

    async def get(self, owner: str, document_id: str) -> DocumentRow:
        row = await anyio.to_thread.run_sync(self.repository.get, owner, document_id)
        if row is None:
            raise DocumentNotFoundError(f"no document {document_id!r}", "document_id")
        return row

    def eta(self, row: DocumentRow) -> float | None:
        if row.status not in ("queued", "running") or row.id not in self._rate:
            return None
        seconds, pages = self._rate[row.id]
        left = row.pages - row.pages_done - row.pages_failed
        return seconds / pages * left if pages else None

    async def describe(self, owner: str, document_id: str) -> dict[str, Any]:
        row = await self.get(owner, document_id)
        pages = await anyio.to_thread.run_sync(lambda: self.repository.pages(row.id, with_text=False))
        return {**card(row, self.eta(row)), "page_results": [_page(p) for p in pages]}

    async def listing(self, owner: str, limit: int, before: float | None) -> list[dict[str, Any]]:
        rows = await anyio.to_thread.run_sync(self.repository.page, owner, limit, before)
        return [card(row, self.eta(row)) for row in rows]

    async def pages(self, owner: str, document_id: str) -> list[PageRow]:
        row = await self.get(owner, document_id)
        return await anyio.to_thread.run_sync(lambda: self.repository.pages(row.id, with_text=True))

    async def chunks(self, owner: str, document_id: str) -> list[ChunkRow]:
        row = await self.get(owner, document_id)
        return await anyio.to_thread.run_sync(self.repository.chunks, row.id)

    async def delete(self, owner: str, document_id: str) -> None:
        if document_id in self._cancelled:
            self._cancelled[document_id].set()
        if not await anyio.to_thread.run_sync(self.repository.delete, owner, document_id):
            raise DocumentNotFoundError(f"no document {document_id!r}", "document_id")
        await self._notify()

    async def watch(self, owner: str, document_id: str, keepalive_s: float = 15.0) -> AsyncIterator[dict[str, Any]]:
        """The document's card now and at every change, until its job is done or failed."""
        last: dict[str, Any] | None = None
        while True:
            row = await self.get(owner, document_id)
            snapshot = card(row, self.eta(row))
            if snapshot != last:
                yield snapshot
                last = snapshot
            if row.status in ("done", "failed"):
                return
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), keepalive_s)

    # -- the job ---------------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _notify_from_thread(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._notify(), self._loop)

    async def _work(self) -> None:
        while True:
            document_id = await self._queue.get()
            cancelled = self._cancelled.setdefault(document_id, threading.Event())
            try:
                await anyio.to_thread.run_sync(self._process, document_id, cancelled, abandon_on_cancel=True)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            except Exception:
                log.exception("document %s: the job failed", document_id)
                try:
                    await anyio.to_thread.run_sync(self._record_failure, document_id)
                except Exception:
                    log.exception("document %s: its failure could not be recorded", document_id)
            finally:
                self._cancelled.pop(document_id, None)
                self._rate.pop(document_id, None)
                await self._notify()

    def _on_loop(self, work: Coroutine[Any, Any, T], cancelled: threading.Event) -> T | None:
        """Run `work` on the event loop (where the generation service lives) from the job's thread;
        None when the job is cancelled meanwhile. Its errors are raised here."""
        assert self._loop is not None  # noqa: S101 - set by start()
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        while True:
            try:
                return future.result(timeout=0.5)
            except concurrent.futures.TimeoutError:
                if cancelled.is_set():
                    future.cancel()
                    return None

    def _summarize(self, pages: list[tuple[int, str]], cancelled: threading.Event) -> dict[str, Any] | None:
        """The summary, or {"error": ...}; None when the job is cancelled meanwhile."""
        assert self.summarizer is not None  # noqa: S101 - checked by the caller
        try:
            summary = self._on_loop(self.summarizer.summarize(pages), cancelled)
        except MoltbotError as exc:
            return {"error": exc.message}
        return None if summary is None else summary.to_json()

    def _index(self, document_id: str, chunks: list[ChunkRow], cancelled: threading.Event) -> bool:
        """Embed the chunks for questions over the documents; False when cancelled. A model that cannot
        embed leaves the document unsearchable (logged), not failed."""
        assert self.asker is not None  # noqa: S101 - checked by the caller
        try:
            vectors = self._on_loop(self.asker.embed([c.text for c in chunks]), cancelled)
        except MoltbotError as exc:
            log.warning("document %s: chunks not embedded: %s", document_id, exc.message)
            return True
        if vectors is None:
            return False
        self.repository.set_embeddings(document_id, {c.index: v for c, v in zip(chunks, vectors, strict=True)})
        return True

    async def ask(self, owner: str, question: str, document_ids: list[str] | None, top_k: int) -> dict[str, Any]:
        if self.asker is None:
            raise InvalidRequestError("questions over the documents are turned off on this server")
        return await self.asker.ask(owner, question, document_ids, top_k)

    async def summary(self, owner: str, document_id: str) -> dict[str, Any] | None:
        row = await self.get(owner, document_id)
        return await anyio.to_thread.run_sync(self.repository.summary, row.id)

    def _record_failure(self, document_id: str) -> None:
        self.repository.set_state(document_id, status="failed", stage="failed", error="internal error")

    def _process(self, document_id: str, cancelled: threading.Event) -> None:
        row = self.repository.get(None, document_id)
        if row is None or row.status in ("done", "failed"):
            return
        self.repository.set_state(document_id, status="running", stage="extract")
        self._notify_from_thread()
        left = [n for n in range(1, row.pages + 1) if n not in self.repository.done_pages(document_id)]
        if left:
            data = self.repository.content(document_id)
            started = time.perf_counter()
            for done, result in enumerate(
                runner.extract(
                    data,
                    left,
                    languages=row.languages,
                    dpi=self.limits.dpi,
                    limits=self.limits.worker,
                    cancelled=cancelled,
                ),
                start=1,
            ):
                if cancelled.is_set() or not self.repository.save_page(document_id, result):
                    return  # deleted, or the server is stopping: the next start resumes
                self._rate[document_id] = (time.perf_counter() - started, done)
                self._notify_from_thread()
            if cancelled.is_set():
                return
        self.repository.set_state(document_id, status="running", stage="preprocess")
        self._notify_from_thread()
        pages = self.repository.pages(document_id, with_text=True)
        pipeline = self.pipelines.resolve(row.pipeline, None)
        document, _reports = pipeline.run(Document.from_pages(p.text or "" for p in pages))
        chunks = [ChunkRow(c.index, c.page, c.start, c.end, c.tokens, c.text) for c in document.chunks]
        if cancelled.is_set() or self.repository.get(None, document_id) is None:
            return
        self.repository.replace_chunks(document_id, chunks)
        if chunks and self.asker is not None:
            self.repository.set_state(document_id, status="running", stage="index")
            self._notify_from_thread()
            if not self._index(document_id, chunks, cancelled):
                return
        failed = sum(1 for p in pages if p.error)
        texts = [(p.page, p.text or "") for p in pages]
        summary: dict[str, Any] | None = None
        if failed < len(pages) and self.summarizer is not None:
            self.repository.set_state(document_id, status="running", stage="summarize")
            self._notify_from_thread()
            summary = self._summarize(texts, cancelled)
            if summary is None:
                return
            self.repository.set_summary(document_id, summary)
        if failed < len(pages) and self.graph is not None:
            self.repository.set_state(document_id, status="running", stage="graph")
            self._notify_from_thread()
            facts = summary or {"error": "no summary"}
            title = str(facts.get("title") or row.name)
            nodes, edges = self.graph.add_document(row.key_id, document_id, title, texts, facts)
            log.info("document %s: %d new graph nodes, %d edges", document_id, nodes, edges)
        if failed == len(pages):
            first = next((p.error for p in pages if p.error), "no page could be read")
            self.repository.set_state(
                document_id, status="failed", stage="extract", error=f"every page failed: {first}"
            )
        else:
            language = document.meta.get("language")
            self.repository.set_state(document_id, status="done", stage="done", language=language)
        log.info(
            "document %s: %s (%d pages, %d failed, %d chunks)", document_id, "done", len(pages), failed, len(chunks)
        )


def _page(page: PageRow) -> dict[str, Any]:
    return {
        "page": page.page,
        "method": page.method,
        "confidence": round(page.confidence, 4),
        "seconds": round(page.seconds, 3),
        "error": page.error,
    }
