"""Table definitions (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("scopes", String(500), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)

# Append-only: the database refuses UPDATE and DELETE on it (triggers made in database.py).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(100), nullable=False),  # "key:<id>" for the API, "cli:<os user>" for the CLI
    Column("action", String(64), nullable=False),  # e.g. key.create, key.revoke
    Column("target", String(200), nullable=False),
    Column("details", Text, nullable=False),  # JSON; never a secret or user content
)

# Data keys, wrapped by the key-encryption key (storage/crypto.py); never stored in the clear.
data_keys = Table(
    "data_keys",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("wrapped", LargeBinary, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("active", Boolean, nullable=False),
)

# Conversations. Every user-owned value is an AES-256-GCM ciphertext (LargeBinary), bound to its row.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),  # the owner
    Column("model", String(200), nullable=False),
    Column("title", LargeBinary, nullable=True),
    Column("meta", LargeBinary, nullable=True),  # JSON
    Column("system_prompt", LargeBinary, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_sessions_owner_created", "key_id", "created_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("session_id", String(40), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # complete | interrupted
    Column("created_at", Float, nullable=False),
    Index("ix_messages_session_seq", "session_id", "seq", unique=True),
)

# Stored Responses API responses (OpenAI's /v1/responses with `store`), owner-scoped. `document` is the
# response object and `input` its input items, both JSON sealed with AES-256-GCM; `previous_id` chains
# a conversation (no foreign key: a deleted response breaks the chains through it, as OpenAI's do).
responses = Table(
    "responses",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("previous_id", String(40), nullable=True),
    Column("status", String(16), nullable=False),
    Column("document", LargeBinary, nullable=False),
    Column("input", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_responses_owner_created", "key_id", "created_at"),
)

# Uploaded documents (owner-scoped) and their processing job: the job's state is these rows, so a
# restarted server resumes after the last page stored. The name, the original file, every page's text
# and every chunk are sealed with AES-256-GCM; what is plain is the job's bookkeeping and our own error
# messages (never the file's content).
documents = Table(
    "documents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("name", LargeBinary, nullable=False),
    Column("media_type", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("stage", String(32), nullable=False),  # queued | extract | preprocess | summarize | done
    Column("pages_done", Integer, nullable=False),
    Column("pages_failed", Integer, nullable=False),
    Column("pipeline", String(64), nullable=False),
    Column("languages", String(64), nullable=False),
    Column("language", String(16), nullable=True),
    Column("error", String(500), nullable=True),
    Column("summary", LargeBinary, nullable=True),  # JSON: services/summaries.Summary, or {"error": ...}
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Index("ix_documents_owner_created", "key_id", "created_at"),
    Index("ix_documents_status", "status"),
)

document_files = Table(
    "document_files",
    metadata,
    Column("document_id", String(40), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True),
    Column("content", LargeBinary, nullable=False),
)

document_pages = Table(
    "document_pages",
    metadata,
    Column("id", String(48), primary_key=True),  # "<document id>/<page, 6 digits>"
    Column("document_id", String(40), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("page", Integer, nullable=False),
    Column("method", String(8), nullable=False),  # text | ocr | none (failed)
    Column("confidence", Float, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("error", String(500), nullable=True),
    Column("text", LargeBinary, nullable=False),
    Index("ix_document_pages_document", "document_id", "page", unique=True),
)

document_chunks = Table(
    "document_chunks",
    metadata,
    Column("id", String(48), primary_key=True),  # "<document id>/<index, 6 digits>"
    Column("document_id", String(40), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("page", Integer, nullable=True),
    Column("start", Integer, nullable=False),
    Column("stop", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("text", LargeBinary, nullable=False),
    Column("embedding", LargeBinary, nullable=True),  # float32 vector of the embedding model, sealed
    Index("ix_document_chunks_document", "document_id", "idx", unique=True),
)

# The knowledge graph, per owner: entities (nodes: name and aliases sealed) and relations (edges) with
# their provenance (the document, page and character span they were read from). A document's edges go
# with it; a node goes when no edge refers to it. `document_id` on a node marks the document's own node.
graph_nodes = Table(
    "graph_nodes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("type", String(32), nullable=False),  # document | person | organization | place | method | dataset
    Column("name", LargeBinary, nullable=False),
    Column("aliases", LargeBinary, nullable=False),  # JSON list of other surface forms
    Column("document_id", String(40), ForeignKey("documents.id", ondelete="CASCADE"), nullable=True),
    Column("created_at", Float, nullable=False),
    Index("ix_graph_nodes_owner_type", "key_id", "type"),
)

graph_edges = Table(
    "graph_edges",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), ForeignKey("api_keys.id"), nullable=False),
    Column("source", String(40), ForeignKey("graph_nodes.id", ondelete="CASCADE"), nullable=False),
    Column("relation", String(32), nullable=False),
    Column("target", String(40), ForeignKey("graph_nodes.id", ondelete="CASCADE"), nullable=False),
    Column("document_id", String(40), ForeignKey("documents.id", ondelete="CASCADE"), nullable=False),
    Column("page", Integer, nullable=True),
    Column("start", Integer, nullable=True),
    Column("stop", Integer, nullable=True),
    Index("ix_graph_edges_owner", "key_id"),
    Index("ix_graph_edges_document", "document_id"),
)

# Columns holding AES-256-GCM ciphertexts (storage/crypto.py): (table, id column, columns). A data-key
# rotation re-encrypts each, REENCRYPT_BATCH rows per transaction (500 unless named: originals are large).
ENCRYPTED_COLUMNS: list[tuple[Table, str, tuple[str, ...]]] = [
    (sessions, "id", ("title", "meta", "system_prompt")),
    (messages, "id", ("content",)),
    (responses, "id", ("document", "input")),
    (documents, "id", ("name", "summary")),
    (document_files, "document_id", ("content",)),
    (document_pages, "id", ("text",)),
    (document_chunks, "id", ("text", "embedding")),
    (graph_nodes, "id", ("name", "aliases")),
]
REENCRYPT_BATCH: dict[str, int] = {"document_files": 2}
