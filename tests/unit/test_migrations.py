"""Alembic migrations: up to head, down to base and up again, on SQLite and a real PostgreSQL; a
database made before migrations existed is brought up to date without losing its keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from moltbot.storage.database import create_database_engine, downgrade, migrate, open_database
from moltbot.storage.keys import KeyStore, Scope
from tests.helpers import postgres_server

TABLES = {"api_keys", "audit_log", "data_keys", "sessions", "messages", "responses"}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def check_up_down_up(url: str | None, path: Path) -> None:
    engine = create_database_engine(url, path)
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    keys = KeyStore(engine)
    key, token = keys.create("kept", frozenset({Scope.CHAT}))
    downgrade(engine, "0001")
    assert "sessions" not in inspect(engine).get_table_names()
    assert keys.authenticate(token) == key  # the keys' table was not touched
    downgrade(engine, "base")
    assert not TABLES & set(inspect(engine).get_table_names())
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    engine.dispose()


def test_sqlite_up_down_up(tmp_path: Path) -> None:
    check_up_down_up(None, tmp_path / "db.sqlite")


def test_postgresql_up_down_up(postgres_url: str, tmp_path: Path) -> None:
    check_up_down_up(postgres_url, tmp_path / "unused")


def test_postgresql_audit_log_is_append_only(postgres_url: str, tmp_path: Path) -> None:
    from moltbot.storage.audit import AuditLog

    engine = open_database(tmp_path / "unused", postgres_url)
    AuditLog(engine).record("test", "key.create", "x")
    with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    engine.dispose()


def test_a_database_from_before_migrations_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "moltbot.db"
    connection = sqlite3.connect(path)  # the schema the first release made with create_all
    connection.execute(
        "CREATE TABLE api_keys (id VARCHAR(32) PRIMARY KEY, name VARCHAR(200) NOT NULL, hash VARCHAR(64) NOT NULL,"
        " scopes VARCHAR(500) NOT NULL, created_at FLOAT NOT NULL, expires_at FLOAT, revoked_at FLOAT)"
    )
    connection.execute("INSERT INTO api_keys VALUES ('0123456789ab', 'before', 'h', 'chat', 1.0, NULL, NULL)")
    connection.commit()
    connection.close()
    engine = open_database(path)
    KeyStore(engine).create("after", frozenset({Scope.ADMIN}))
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert [k.name for k in KeyStore(engine).list()] == ["before", "after"]
