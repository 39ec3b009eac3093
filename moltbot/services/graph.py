"""GraphService: the knowledge graph over an owner's documents, built by the document job and queried
with networkx (search by name and type, neighbours, shortest path, subgraphs, GraphML and JSON export).

A document's graph is rebuilt whole by its job (a resumed job replaces, never doubles); entities are
resolved against the owner's existing nodes (knowledge/entities.py), so the same author or institute
across many documents is one node with its aliases.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import networkx as nx

from moltbot.errors import InvalidRequestError, MoltbotError
from moltbot.knowledge.entities import (
    ENTITY_TYPES,
    KnownEntity,
    Mention,
    Relation,
    Resolver,
    checked_affiliations,
    clean,
    from_summary,
    front_affiliations,
    ner,
    retyped,
)
from moltbot.storage.graph import DocumentGraph, EdgeRow, GraphRepository, NodeRow, new_node_id

MAX_RESULTS = 500


class NodeNotFoundError(MoltbotError):
    """No such node in this owner's graph: a 404."""


@dataclass(slots=True, frozen=True)
class GraphView:
    nodes: dict[str, NodeRow]
    edges: list[EdgeRow]

    def graph(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        for node in self.nodes.values():
            g.add_node(node.id, type=node.type, name=node.name)
        for edge in self.edges:
            g.add_edge(edge.source, edge.target, key=edge.id, relation=edge.relation, document=edge.document_id)
        return g


def node_json(node: NodeRow, degree: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": node.id, "type": node.type, "name": node.name, "aliases": node.aliases}
    if node.document_id is not None:
        body["document_id"] = node.document_id
    if degree is not None:
        body["degree"] = degree
    return body


def edge_json(edge: EdgeRow) -> dict[str, Any]:
    return {
        "id": edge.id,
        "source": edge.source,
        "relation": edge.relation,
        "target": edge.target,
        "provenance": {"document_id": edge.document_id, "page": edge.page, "start": edge.start, "end": edge.stop},
    }


class GraphService:
    def __init__(self, repository: GraphRepository) -> None:
        self.repository = repository

    # -- building (the document job's thread) ----------------------------------------------------

    def add_document(
        self, owner: str, document_id: str, title: str, pages: Sequence[tuple[int, str]], summary: dict[str, Any]
    ) -> tuple[int, int]:
        """Read the document's entities and relations into the graph; (nodes, edges) it now has."""
        found = ner(pages)
        facts: list[Mention] = []
        relations: list[Relation] = []
        mentions = found
        if "error" not in summary:
            titled = retyped(found, [], str(summary.get("title") or ""))  # a title is no one's name
            summary = checked_affiliations(summary, titled)
            facts, relations = from_summary(summary, pages)
            mentions = retyped(titled, facts)
            relations += front_affiliations(summary, mentions, pages)
        known = self.repository.nodes(owner)
        resolver = Resolver(KnownEntity(n.id, n.type, n.name, list(n.aliases)) for n in known if not n.document_id)
        by_id = {n.id: n for n in known}
        update = DocumentGraph()
        own = next((n for n in known if n.document_id == document_id), None)
        if own is None:
            own = NodeRow(new_node_id(), "document", clean(title) or document_id, [], document_id)
            update.new_nodes.append(own)

        def node_for(type_: str, name: str) -> str:
            found = resolver.resolve(type_, name)
            if found is None:
                node = NodeRow(new_node_id(), type_, name, [])
                update.new_nodes.append(node)
                resolver.add(KnownEntity(node.id, type_, name, []))
                by_id[node.id] = node
                return node.id
            if name != found.name and name not in found.aliases and len(found.aliases) < 32:
                found.aliases.append(name)
                if found.id in {n.id for n in known}:
                    update.aliases[found.id] = list(found.aliases)
                else:
                    by_id[found.id].aliases = list(found.aliases)
            return found.id

        edges: set[tuple[str, str, str, int | None, int | None, int | None]] = set()
        for relation in relations:
            source = own.id if relation.source[0] == "document" else node_for(*relation.source)
            target = node_for(*relation.target)
            edges.add((source, relation.relation, target, relation.page, relation.start, relation.stop))
        seen: set[tuple[str, int | None]] = set()
        for mention in [*facts, *mentions]:
            target = node_for(mention.type, mention.name)
            if (target, mention.page) in seen or mention in facts:
                seen.add((target, mention.page))
                continue
            seen.add((target, mention.page))
            edges.add((own.id, "mentions", target, mention.page, mention.start, mention.stop))
        update.edges = sorted(edges, key=lambda e: (e[3] or 0, e[4] or 0, e[1]))
        self.repository.replace_document(owner, document_id, update)
        return len(update.new_nodes), len(update.edges)

    # -- queries ---------------------------------------------------------------------------------

    def _view(self, owner: str, document_ids: list[str] | None = None) -> GraphView:
        nodes = {n.id: n for n in self.repository.nodes(owner)}
        edges = self.repository.edges(owner, document_ids)
        if document_ids is not None:
            used = {e.source for e in edges} | {e.target for e in edges}
            used |= {n.id for n in nodes.values() if n.document_id in document_ids}
            nodes = {k: v for k, v in nodes.items() if k in used}
        return GraphView(nodes, edges)

    async def search(self, owner: str, query: str, type_: str | None, limit: int) -> list[dict[str, Any]]:
        if type_ is not None and type_ not in ENTITY_TYPES:
            raise InvalidRequestError(f"type is one of {', '.join(ENTITY_TYPES)}", "type")
        view = await anyio.to_thread.run_sync(self._view, owner)
        degree: dict[str, int] = {}
        for edge in view.edges:
            degree[edge.source] = degree.get(edge.source, 0) + 1
            degree[edge.target] = degree.get(edge.target, 0) + 1
        needle = query.casefold().strip()
        found = [
            n
            for n in view.nodes.values()
            if (type_ is None or n.type == type_)
            and (not needle or any(needle in x.casefold() for x in (n.name, *n.aliases)))
        ]
        found.sort(key=lambda n: (-degree.get(n.id, 0), n.name))
        return [node_json(n, degree.get(n.id, 0)) for n in found[:limit]]

    async def node(self, owner: str, node_id: str) -> dict[str, Any]:
        view = await anyio.to_thread.run_sync(self._view, owner)
        node = view.nodes.get(node_id)
        if node is None:
            raise NodeNotFoundError(f"no node {node_id!r}", "node_id")
        touching = [e for e in view.edges if node_id in (e.source, e.target)][:MAX_RESULTS]
        neighbours = {e.target if e.source == node_id else e.source for e in touching}
        return {
            **node_json(node, len(touching)),
            "edges": [edge_json(e) for e in touching],
            "neighbours": [node_json(view.nodes[n]) for n in sorted(neighbours) if n in view.nodes],
        }

    async def path(self, owner: str, source: str, target: str) -> dict[str, Any]:
        view = await anyio.to_thread.run_sync(self._view, owner)
        for name, node_id in (("source", source), ("target", target)):
            if node_id not in view.nodes:
                raise NodeNotFoundError(f"no node {node_id!r}", name)
        undirected = view.graph().to_undirected(as_view=True)
        try:
            hops: list[str] = nx.shortest_path(undirected, source, target)
        except nx.NetworkXNoPath:
            raise NodeNotFoundError("no path joins the two nodes", "target") from None
        edges = []
        for a, b in itertools.pairwise(hops):
            edge = next(e for e in view.edges if {e.source, e.target} == {a, b})
            edges.append(edge_json(edge))
        return {"nodes": [node_json(view.nodes[n]) for n in hops], "edges": edges, "length": len(hops) - 1}

    async def subgraph(self, owner: str, document_ids: list[str] | None) -> dict[str, Any]:
        view = await anyio.to_thread.run_sync(self._view, owner, document_ids)
        return {
            "nodes": [node_json(n) for n in view.nodes.values()],
            "edges": [edge_json(e) for e in view.edges],
        }

    async def export(self, owner: str, document_ids: list[str] | None, fmt: str) -> bytes:
        view = await anyio.to_thread.run_sync(self._view, owner, document_ids)
        if fmt == "json":
            import json

            body = {"nodes": [node_json(n) for n in view.nodes.values()], "edges": [edge_json(e) for e in view.edges]}
            return json.dumps(body, ensure_ascii=False, indent=1).encode()
        g = nx.MultiDiGraph()
        for node in view.nodes.values():
            g.add_node(node.id, type=node.type, name=node.name, aliases="|".join(node.aliases))
        for edge in view.edges:
            g.add_edge(
                edge.source,
                edge.target,
                key=edge.id,
                relation=edge.relation,
                document=edge.document_id,
                page=-1 if edge.page is None else edge.page,
            )
        out = io.BytesIO()
        nx.write_graphml(g, out, encoding="utf-8")
        return out.getvalue()
