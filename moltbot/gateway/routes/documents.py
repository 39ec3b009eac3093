"""Documents (scope `documents`): upload (multipart), the processing job's state and progress (JSON,
or server-sent events), the extracted pages and chunks, delete. Owner-scoped: another key's document
answers 404. The work is DocumentService's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from moltbot.gateway.auth import request_owner
from moltbot.gateway.deps import Documents
from moltbot.gateway.errors import APIError
from moltbot.gateway.schemas import DocumentAskRequest
from moltbot.gateway.sse import event_stream, named_event

router = APIRouter()
_DOCUMENT_ID = re.compile(r"^doc_[0-9a-f]{24}$")


def _checked(document_id: str) -> str:
    if not _DOCUMENT_ID.match(document_id):
        raise APIError(404, f"no document {document_id[:64]!r}", param="document_id", code="document_not_found")
    return document_id


@router.post("/v1/documents", status_code=202)
async def upload_document(
    request: Request,
    documents: Documents,
    file: Annotated[UploadFile, File(description="PDF, PNG, JPEG, TIFF, WebP, BMP or UTF-8 text")],
    pipeline: Annotated[str | None, Form(max_length=64)] = None,
    languages: Annotated[str | None, Form(max_length=64)] = None,
) -> JSONResponse:
    data = await file.read(documents.limits.max_bytes + 1)
    body = await documents.upload(request_owner(request), file.filename or "document", data, pipeline, languages)
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/documents/{body['id']}"})


@router.post("/v1/documents/ask")
async def ask_documents(body: DocumentAskRequest, request: Request, documents: Documents) -> JSONResponse:
    return JSONResponse(await documents.ask(request_owner(request), body.question, body.document_ids, body.top_k))


@router.get("/v1/documents")
async def list_documents(
    request: Request,
    documents: Documents,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[float | None, Query(ge=0)] = None,
) -> JSONResponse:
    data = await documents.listing(request_owner(request), limit, before)
    return JSONResponse({"object": "list", "data": data, "has_more": len(data) == limit})


@router.get("/v1/documents/{document_id}")
async def get_document(document_id: str, request: Request, documents: Documents) -> JSONResponse:
    return JSONResponse(await documents.describe(request_owner(request), _checked(document_id)))


@router.get("/v1/documents/{document_id}/events")
async def document_events(document_id: str, request: Request, documents: Documents) -> StreamingResponse:
    owner, checked = request_owner(request), _checked(document_id)
    await documents.get(owner, checked)  # a 404 before the stream starts

    async def events() -> AsyncIterator[bytes]:
        async for snapshot in documents.watch(owner, checked):
            if await request.is_disconnected():
                return
            kind = "document.done" if snapshot["status"] in ("done", "failed") else "document.progress"
            yield named_event(kind, snapshot)

    return event_stream(events())


@router.get("/v1/documents/{document_id}/pages")
async def document_pages(document_id: str, request: Request, documents: Documents) -> JSONResponse:
    pages = await documents.pages(request_owner(request), _checked(document_id))
    data = [
        {
            "page": p.page,
            "method": p.method,
            "confidence": round(p.confidence, 4),
            "error": p.error,
            "text": p.text,
        }
        for p in pages
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/documents/{document_id}/chunks")
async def document_chunks(document_id: str, request: Request, documents: Documents) -> JSONResponse:
    chunks = await documents.chunks(request_owner(request), _checked(document_id))
    data = [
        {"index": c.index, "page": c.page, "start": c.start, "end": c.stop, "tokens": c.tokens, "text": c.text}
        for c in chunks
    ]
    return JSONResponse({"object": "list", "data": data})


@router.get("/v1/documents/{document_id}/summary")
async def document_summary(document_id: str, request: Request, documents: Documents) -> JSONResponse:
    summary = await documents.summary(request_owner(request), _checked(document_id))
    if summary is None:
        raise APIError(409, "the document has no summary yet (see its status)", param="document_id", code="not_ready")
    return JSONResponse({"id": document_id, "object": "document.summary", **summary})


@router.delete("/v1/documents/{document_id}")
async def delete_document(document_id: str, request: Request, documents: Documents) -> Response:
    await documents.delete(request_owner(request), _checked(document_id))
    return JSONResponse({"id": document_id, "object": "document.deleted", "deleted": True})
