"""Database.kept_connection: one autocommit connection per thread, kept
between uses, seeing what is committed at the moment it asks."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Connection, text
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
