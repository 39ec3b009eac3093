"""The knowledge graph's rows: nodes (names sealed) and edges with provenance, owner-scoped."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, delete, insert, select, union, update

from moltbot.storage.crypto import Vault
from moltbot.storage.database import guarded_writing
from moltbot.storage.schema import graph_edges, graph_nodes


@dataclass(slots=True)
class NodeRow:
    id: str
    type: str
    name: str
    aliases: list[str] = field(default_factory=list)
    document_id: str | None = None


@dataclass(slots=True, frozen=True)
class EdgeRow:
    id: str
    source: str
    relation: str
    target: str
    document_id: str
    page: int | None
    start: int | None
    stop: int | None


@dataclass(slots=True)
class DocumentGraph:
    """What one document adds: new nodes, aliases learnt by known nodes, and edges."""

    new_nodes: list[NodeRow] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)  # known node id -> its whole alias list
    edges: list[tuple[str, str, str, int | None, int | None, int | None]] = field(default_factory=list)


def new_node_id() -> str:
    return f"node_{secrets.token_hex(12)}"


class GraphRepository:
    def __init__(self, engine: Engine, vault: Vault) -> None:
        self._engine = engine
        self._vault = vault

    def _seal(self, node_id: str, column: str, value: object) -> bytes:
        return self._vault.encrypt_text(json.dumps(value, ensure_ascii=False), "graph_nodes", column, node_id)

    def _open(self, node_id: str, column: str, blob: bytes) -> object:
        return json.loads(self._vault.decrypt_text(blob, "graph_nodes", column, node_id))

    def nodes(self, key_id: str) -> list[NodeRow]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(graph_nodes).where(graph_nodes.c.key_id == key_id)).all()
        found = []
        for row in rows:
            aliases = self._open(row.id, "aliases", row.aliases)
            found.append(
                NodeRow(
                    row.id,
                    row.type,
                    str(self._open(row.id, "name", row.name)),
                    [str(a) for a in aliases] if isinstance(aliases, list) else [],
                    row.document_id,
                )
            )
        return found

    def edges(self, key_id: str, document_ids: list[str] | None = None) -> list[EdgeRow]:
        query = select(graph_edges).where(graph_edges.c.key_id == key_id)
        if document_ids is not None:
            query = query.where(graph_edges.c.document_id.in_(document_ids))
        with self._engine.connect() as conn:
            return [
                EdgeRow(r.id, r.source, r.relation, r.target, r.document_id, r.page, r.start, r.stop)
                for r in conn.execute(query)
            ]

    def replace_document(self, key_id: str, document_id: str, graph: DocumentGraph) -> None:
        """A document's nodes and edges, replacing what an earlier run of its job stored (so a resumed
        job never doubles them); nodes no edge refers to any more are removed."""
        now = time.time()
        with guarded_writing(self._engine) as conn:
            conn.execute(delete(graph_edges).where(graph_edges.c.document_id == document_id))
            for node in graph.new_nodes:
                conn.execute(
                    insert(graph_nodes).values(
                        id=node.id,
                        key_id=key_id,
                        type=node.type,
                        name=self._seal(node.id, "name", node.name),
                        aliases=self._seal(node.id, "aliases", node.aliases),
                        document_id=node.document_id,
                        created_at=now,
                    )
                )
            for node_id, aliases in graph.aliases.items():
                conn.execute(
                    update(graph_nodes)
                    .where(graph_nodes.c.id == node_id, graph_nodes.c.key_id == key_id)
                    .values(aliases=self._seal(node_id, "aliases", aliases))
                )
            if graph.edges:
                conn.execute(
                    insert(graph_edges),
                    [
                        {
                            "id": f"edge_{secrets.token_hex(12)}",
                            "key_id": key_id,
                            "source": source,
                            "relation": relation,
                            "target": target,
                            "document_id": document_id,
                            "page": page,
                            "start": start,
                            "stop": stop,
                        }
                        for source, relation, target, page, start, stop in graph.edges
                    ],
                )
            _remove_orphans(conn, key_id)


def remove_document_graph(conn: Connection, key_id: str, document_id: str) -> None:
    """Within a caller's transaction: the document's edges, its own node, and nodes left orphaned."""
    conn.execute(delete(graph_edges).where(graph_edges.c.document_id == document_id))
    conn.execute(delete(graph_nodes).where(graph_nodes.c.document_id == document_id))
    _remove_orphans(conn, key_id)


def _remove_orphans(conn: Connection, key_id: str) -> None:
    used = union(
        select(graph_edges.c.source.label("id")).where(graph_edges.c.key_id == key_id),
        select(graph_edges.c.target.label("id")).where(graph_edges.c.key_id == key_id),
    ).subquery()
    conn.execute(
        delete(graph_nodes).where(
            graph_nodes.c.key_id == key_id,
            graph_nodes.c.id.not_in(select(used.c.id)),
        )
    )
