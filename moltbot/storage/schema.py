"""Table definitions (SQLAlchemy Core)."""

from __future__ import annotations

from sqlalchemy import (
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

# Columns holding AES-256-GCM ciphertexts (storage/crypto.py): (table, id column, columns). A data-key
# rotation re-encrypts each.
ENCRYPTED_COLUMNS: list[tuple[Table, str, tuple[str, ...]]] = [
    (sessions, "id", ("title", "meta", "system_prompt")),
    (messages, "id", ("content",)),
    (responses, "id", ("document", "input")),
]
