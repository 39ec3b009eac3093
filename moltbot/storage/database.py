"""The database engine: SQLite in the data directory by default (WAL, synchronous=FULL, busy timeout,
foreign keys), PostgreSQL (psycopg 3) when a URL names one. Alembic migrations run at open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

from moltbot.storage.errors import StorageBusyError, StorageFullError

HEAD = "head"
_BEGIN_MODE = "moltbot_sqlite_begin"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by SQLAlchemy's "begin" event below, not by the sqlite3 module (which
    # starts one lazily, at the first write: two writers could both read before either writes).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=5000"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN IMMEDIATE for write transactions (`writing`): the write lock is taken before the first
    read, so read-then-write transactions serialize instead of failing; plain BEGIN otherwise."""
    mode = conn.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write after reading: on SQLite it holds the database's write lock from
    its start (waiting up to the busy timeout for it); on PostgreSQL, lock the rows it reads."""
    with engine.connect().execution_options(**{_BEGIN_MODE: "IMMEDIATE"}) as conn, conn.begin():
        yield conn


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("moltbot.storage") / "migrations"))
    return config


def migrate(engine: Engine, revision: str = HEAD) -> None:
    """Bring the schema to `revision` (upgrade), in one transaction per migration."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def create_database_engine(url: str | None, sqlite_path: Path) -> Engine:
    """An engine for `url` (PostgreSQL: `postgresql+psycopg://…`), or SQLite at `sqlite_path`."""
    if url:
        return create_engine(url, pool_pre_ping=True, future=True)
    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{sqlite_path}", future=True)
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def open_database(path: Path, url: str | None = None) -> Engine:
    """Open (creating if needed) the database and migrate it to the latest schema."""
    engine = create_database_engine(url, path)
    migrate(engine)
    return engine


def _full(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "disk is full" in text or "no space left" in text or "could not extend file" in text


@contextmanager
def guarded_writing(engine: Engine) -> Iterator[Connection]:
    """`writing`, with a full disk as StorageFullError and a lock held too long as StorageBusyError."""
    try:
        with writing(engine) as conn:
            yield conn
    except OperationalError as exc:
        if _full(exc):
            raise StorageFullError("the data directory's disk is full") from None
        if "locked" in str(exc.orig).lower():
            raise StorageBusyError("the database is busy") from None
        raise
