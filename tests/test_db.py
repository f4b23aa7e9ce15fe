"""Database.kept_connection: one autocommit connection per thread, kept
between uses, seeing what is committed at the moment it asks; kept_write:
a write transaction opened by hand on it."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, insert, text
from sqlalchemy.exc import DBAPIError

from provisiond import models
from provisiond.db import Database
from provisiond.services import Services


def test_kept_connection_is_kept_per_thread(services: Services) -> None:
    db = services.db
    with db.kept_connection() as first:
        pass
    with db.kept_connection() as again:
        assert again is first and not again.closed
    other: list[object] = []

    def elsewhere() -> None:
        with db.kept_connection() as connection:
            other.append(connection)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert other and other[0] is not first


def test_kept_connection_sees_each_commit_at_once(services: Services) -> None:
    """Autocommit: no snapshot held between statements (a transaction kept
    open would go on answering from the past, on PostgreSQL and SQLite's WAL)."""
    db = services.db
    count = text("SELECT count(*) FROM groups")
    with db.kept_connection() as connection:
        before = connection.scalar(count)
        with db.write() as session:
            session.add(models.Group(name="kept"))
        assert connection.scalar(count) == before + 1


def test_a_database_error_drops_the_kept_connection(services: Services) -> None:
    db = services.db
    with db.kept_connection() as broken:
        pass
    with pytest.raises(DBAPIError):
        with db.kept_connection() as connection:
            connection.execute(text("SELECT * FROM no_such_table"))
    assert broken.closed
    with db.kept_connection() as fresh:
        assert fresh is not broken
        assert fresh.scalar(text("SELECT 1")) == 1


def test_dispose_closes_kept_connections(db_url: str) -> None:
    db = Database(db_url)
    with db.kept_connection() as connection:
        connection.scalar(text("SELECT 1"))
    db.dispose()
    assert connection.closed


def test_ask_answers_after_the_database_dropped_the_kept_connection(postgres_database: str) -> None:
    """A database restart (here: its backend terminated) breaks the kept
    connection; the next question is still answered, on a new one. (A
    SQLite connection is a file handle: no server can drop it.)"""
    db = Database(postgres_database)
    try:
        pid = db.ask(lambda connection: connection.scalar(text("SELECT pg_backend_pid()")))
        with db.engine.connect() as other:
            assert other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        again = db.ask(lambda connection: connection.scalar(text("SELECT pg_backend_pid()")))
        assert again != pid
    finally:
        db.dispose()


def test_ask_does_not_repeat_a_question_that_failed_on_its_own(services: Services) -> None:
    asked: list[int] = []

    def question(connection: Connection) -> None:
        asked.append(1)
        connection.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DBAPIError):
        services.db.ask(question)
    assert asked == [1]


def _add(connection: Connection, *names: str) -> None:
    connection.execute(insert(models.Group), [{"name": name} for name in names])


def _group_names(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(g.name for g in session.query(models.Group))


def test_kept_write_commits_the_block(services: Services) -> None:
    db = services.db
    before = _group_names(db)
    with db.kept_write() as connection:
        _add(connection, 'one', 'two')
    assert _group_names(db) == sorted(before + ["one", "two"])
    with db.kept_connection() as kept:  # the same connection, back in autocommit
        assert kept is connection
        _add(kept, 'three')
    assert "three" in _group_names(db)


def test_kept_write_rolls_back_everything_when_the_block_fails(services: Services) -> None:
    db = services.db
    before = _group_names(db)
    with pytest.raises(RuntimeError):
        with db.kept_write() as connection:
            _add(connection, 'half')
            raise RuntimeError("a refusal after the first statement")
    assert _group_names(db) == before
    with pytest.raises(DBAPIError):
        with db.kept_write() as connection:
            _add(connection, 'half')
            connection.execute(text("INSERT INTO no_such_table VALUES (1)"))
    assert _group_names(db) == before
    assert connection.closed  # a database error dropped it
    with db.kept_write() as fresh:
        _add(fresh, 'after')
    assert _group_names(db) == sorted(before + ["after"])


def test_kept_write_is_one_transaction(services: Services) -> None:
    """Nobody sees the block's first statement before the block ends: BEGIN
    opened a real transaction, not a statement-by-statement autocommit."""
    db = services.db
    before = _group_names(db)
    with db.kept_write() as connection:
        _add(connection, "first")
        assert _group_names(db) == before  # another connection, mid-transaction
        _add(connection, "second")
    assert _group_names(db) == sorted(before + ["first", "second"])


def test_kept_write_begins_on_a_new_connection_after_the_database_dropped_it(postgres_database: str) -> None:
    db = Database(postgres_database)
    try:
        pid = db.ask(lambda connection: connection.scalar(text("SELECT pg_backend_pid()")))
        with db.engine.connect() as other:
            assert other.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with db.kept_write() as connection:
            again = connection.scalar(text("SELECT pg_backend_pid()"))
        assert again != pid
    finally:
        db.dispose()
