"""The knowledge graph (scope `documents`): entities and relations read from a key's documents, with
where each was read. Search, a node and its neighbours, the shortest path between two, the subgraph of
some documents (or all), and export as GraphML or JSON. The work is GraphService's."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from moltbot.gateway.auth import request_owner
from moltbot.gateway.deps import Graph
from moltbot.gateway.errors import APIError

router = APIRouter()
_NODE_ID = re.compile(r"^node_[0-9a-f]{24}$")
_DOCUMENT_ID = re.compile(r"^doc_[0-9a-f]{24}$")
DocumentIds = Annotated[list[str] | None, Query(max_length=200)]


def _node(node_id: str, param: str) -> str:
    if not _NODE_ID.match(node_id):
        raise APIError(404, f"no node {node_id[:64]!r}", param=param, code="node_not_found")
    return node_id


def _documents(document_id: list[str] | None) -> list[str] | None:
    for value in document_id or []:
        if not _DOCUMENT_ID.match(value):
            raise APIError(400, "document_id values are document ids (doc_...)", param="document_id")
    return document_id or None


@router.get("/v1/graph/nodes")
async def search_nodes(
    request: Request,
    graph: Graph,
    q: Annotated[str, Query(max_length=200)] = "",
    type: Annotated[str | None, Query(max_length=32)] = None,  # noqa: A002 - the API's field name
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    return JSONResponse({"object": "list", "data": await graph.search(request_owner(request), q, type, limit)})


@router.get("/v1/graph/nodes/{node_id}")
async def get_node(node_id: str, request: Request, graph: Graph) -> JSONResponse:
    return JSONResponse(await graph.node(request_owner(request), _node(node_id, "node_id")))


@router.get("/v1/graph/path")
async def shortest_path(
    request: Request,
    graph: Graph,
    source: Annotated[str, Query(max_length=64)],
    target: Annotated[str, Query(max_length=64)],
) -> JSONResponse:
    body = await graph.path(request_owner(request), _node(source, "source"), _node(target, "target"))
    return JSONResponse(body)


@router.get("/v1/graph/subgraph")
async def subgraph(request: Request, graph: Graph, document_id: DocumentIds = None) -> JSONResponse:
    return JSONResponse(await graph.subgraph(request_owner(request), _documents(document_id)))


@router.get("/v1/graph/export")
async def export(
    request: Request,
    graph: Graph,
    format: Literal["graphml", "json"] = "graphml",  # noqa: A002 - the API's field name
    document_id: DocumentIds = None,
) -> Response:
    body = await graph.export(request_owner(request), _documents(document_id), format)
    media = "application/graphml+xml" if format == "graphml" else "application/json"
    headers = {"Content-Disposition": f'attachment; filename="graph.{format}"'}
    return Response(body, media_type=media, headers=headers)
