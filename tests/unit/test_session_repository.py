"""The session repository on SQLite and on a real PostgreSQL: ownership, ordering, pagination,
concurrent appends, import, encryption; the sessions migration from the previous schema version."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text

from moltbot.storage.crypto import Vault
from moltbot.storage.database import create_database_engine, downgrade, migrate
from moltbot.storage.keys import KeyStore, Scope
from moltbot.storage.sessions import SessionRepository
from tests.helpers import postgres_server

CANARY = "canary-repo-41aa"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    engine = create_database_engine(url, tmp_path / "db.sqlite")
    migrate(engine)
    yield engine
    downgrade(engine, "base")  # leave the shared PostgreSQL empty for the next test
    engine.dispose()


def repo_and_keys(engine: Engine, tmp_path: Path) -> tuple[SessionRepository, str, str]:
    keys = KeyStore(engine)
    alice, _ = keys.create("alice", frozenset({Scope.SESSIONS}))
    bob, _ = keys.create("bob", frozenset({Scope.SESSIONS}))
    return SessionRepository(engine, Vault(engine, tmp_path / "kek")), alice.id, bob.id


def test_sessions_are_owned_ordered_and_paged(engine: Engine, tmp_path: Path) -> None:
    repo, alice, bob = repo_and_keys(engine, tmp_path)
    made = [repo.create(alice, "m", title=f"s{i}", created_at=1000.0 + i // 2) for i in range(7)]
    repo.create(bob, "m", title="bob's")
    seen, before = [], None
    for _ in range(10):
        page = repo.list(alice, 3, before)
        seen += [s.id for s in page]
        if len(page) < 3:
            break
        before = (page[-1].created_at, page[-1].id)
    expected = [s.id for s in sorted(made, key=lambda s: (s.created_at, s.id), reverse=True)]
    assert seen == expected
    assert repo.get(bob, made[0].id) is None and not repo.delete(bob, made[0].id)
    assert repo.update(bob, made[0].id, title="x") is None
    assert repo.add_message(bob, made[0].id, "user", "hi") is None
    assert repo.update(alice, made[0].id, title="renamed").title == "renamed"  # type: ignore[union-attr]


WRITERS, EACH = 12, 10


@contextmanager
def cpu_hogs(count: int = 2) -> Iterator[None]:
    """Busy processes on every core, as on a CI machine shared with other work."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_messages_keep_order_under_concurrent_appends(engine: Engine, tmp_path: Path) -> None:
    """Many writers on one session, on a busy machine: every append succeeds the first time (on SQLite
    BEGIN IMMEDIATE serializes them; they used to read the same max(seq) and run out of retries)."""
    repo, alice, _ = repo_and_keys(engine, tmp_path)
    session = repo.create(alice, "m")
    errors: list[BaseException] = []
    database_errors: list[str] = []  # every statement that failed, retried or not
    event.listen(engine, "handle_error", lambda context: database_errors.append(repr(context.original_exception)))
    start = threading.Barrier(WRITERS)

    def append(worker: int) -> None:
        try:
            start.wait(timeout=60)
            for i in range(EACH):
                repo.add_message(alice, session.id, "user", f"{worker}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(WRITERS)]
    with cpu_hogs():
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert not errors, errors[:3]
    assert not database_errors, database_errors[:3]
    stored = repo.get(alice, session.id, with_messages=True)
    assert stored is not None
    assert [m.seq for m in stored.messages] == list(range(WRITERS * EACH))
    for worker in range(WRITERS):  # each writer's messages in its own order
        mine = [m.content for m in stored.messages if m.content.startswith(f"{worker}-")]
        assert mine == [f"{worker}-{i}" for i in range(EACH)]


def test_import_delete_and_encryption(engine: Engine, tmp_path: Path) -> None:
    repo, alice, _ = repo_and_keys(engine, tmp_path)
    history = [{"role": "user", "content": CANARY}, {"role": "assistant", "content": "ok", "status": "interrupted"}]
    copy = repo.import_session(alice, "m", {"title": CANARY, "metadata": {"k": CANARY}}, history)
    assert [(m.role, m.content, m.status) for m in copy.messages] == [
        ("user", CANARY, "complete"),
        ("assistant", "ok", "interrupted"),
    ]
    assert copy.metadata == {"k": CANARY}
    with engine.connect() as conn:
        for table, column in (("sessions", "title"), ("sessions", "meta"), ("messages", "content")):
            values = conn.execute(text(f"SELECT {column} FROM {table}")).scalars().all()  # noqa: S608
            assert all(CANARY.encode() not in bytes(v) for v in values if v is not None)
    assert repo.delete(alice, copy.id)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM messages")).scalar_one() == 0


def test_the_sessions_migration_keeps_what_the_previous_version_stored(tmp_path: Path) -> None:
    engine = create_database_engine(None, tmp_path / "db.sqlite")
    migrate(engine, "0001")  # the schema of the previous version
    key, token = KeyStore(engine).create("kept", frozenset({Scope.CHAT}))
    migrate(engine)
    assert KeyStore(engine).authenticate(token) == key
    repo = SessionRepository(engine, Vault(engine, tmp_path / "kek"))
    assert repo.create(key.id, "m").id.startswith("sess_")
