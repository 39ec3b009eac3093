"""The database engine: SQLite in the data directory by default (WAL, full sync, foreign keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text

from moltbot.storage.schema import metadata


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def open_database(path: Path) -> Engine:
    """Open (creating if needed) the SQLite database at `path` with its tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", future=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    with engine.begin() as conn:
        for verb in ("UPDATE", "DELETE"):
            conn.execute(
                text(
                    f"CREATE TRIGGER IF NOT EXISTS audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
                )
            )
    return engine
