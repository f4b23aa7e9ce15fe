"""Engine and session factory, built once per process; schema migrations.

Data functions take a ``Session`` and never open their own: the web layer
opens one per request, daemons one per unit of work. The hot paths (DHCP and
TFTP lookups, the installer's slot poll) use each thread's kept connection
instead: :meth:`Database.ask` for a read, :meth:`Database.kept_write` for a
short write transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

log = logging.getLogger("provisiond.db")
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def normalise_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that
    # every unit of work is one BEGIN IMMEDIATE ... COMMIT.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Writers take the database lock at BEGIN (and queue on busy_timeout)
    # instead of failing with "database is locked" when they upgrade a read
    # lock mid-transaction. Readers begin deferred and never block in WAL.
    begin = conn.get_execution_options().get("sqlite_begin", "BEGIN")
    if begin:  # None: autocommit, every statement on its own (Database.kept_connection)
        conn.exec_driver_sql(begin)


class Database:
    """The engine and its two session factories, built once per process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        self.reader: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)
        self.writer: sessionmaker[Session] = sessionmaker(writer, expire_on_commit=False)
        autocommit = self.engine.execution_options(
            **({"sqlite_begin": None} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}))
        self._autocommit = autocommit
        self._kept = threading.local()  # each thread's (pid, connection), see kept_connection
        self._kept_lock = threading.Lock()
        self._all_kept: list[tuple[int, Connection]] = []
        database = make_url(self.url).database if self.is_sqlite else None
        self._write_lock = f"{database}.writelock" if database and database != ":memory:" else None

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: committed if the block succeeds, else rolled back."""
        with self._sqlite_writer_turn(), self.writer() as session, session.begin():
            yield session

    @contextmanager
    def _sqlite_writer_turn(self) -> Iterator[None]:
        """On SQLite, writers of every process queue on a blocking file lock.

        SQLite's own busy handler polls with sleeps of up to 100 ms, so under
        contention a writer waits far longer than the lock is held; a blocking
        ``flock`` hands the turn over the moment the holder commits. The lock
        is per open file, so threads of one process queue too.
        """
        if self._write_lock is None:
            yield
            return
        fd = os.open(self._write_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.reader() as session, session.begin():
            yield session

    @contextmanager
    def kept_connection(self) -> Iterator[Connection]:
        """This thread's own autocommit connection, kept open between uses:
        for a question asked per packet or per poll as one read statement
        (DHCP and TFTP boot plans, a queued installer's slot poll), where a
        session, a pool checkout and its pre-ping cost more than the query.
        Every statement runs on its own and sees what is committed at that
        moment. A database error drops the connection (the caller's request
        fails once); the next use opens another. A forked child never uses
        its parent's."""
        connection = self._kept_or_new()
        try:
            yield connection
            connection.rollback()  # ends SQLAlchemy's autobegun block; nothing to undo in autocommit
        except DBAPIError:
            self._drop(connection)
            raise

    @contextmanager
    def kept_write(self) -> Iterator[Connection]:
        """One short write transaction on this thread's kept connection,
        committed if the block succeeds, else rolled back: for the slot
        endpoint's writes, where a pooled session's checkout, pre-ping and
        ORM bookkeeping cost more than the statements. The transaction is
        opened by hand (``BEGIN``; on SQLite ``BEGIN IMMEDIATE`` in the
        writers' turn), so it is as atomic and durable as :meth:`write`.
        A connection found broken at ``BEGIN`` (nothing done yet) is
        replaced once, as :meth:`ask` does."""
        with self._sqlite_writer_turn():
            connection = self._once_more_if_broken(self._begin, "beginning")
            try:
                yield connection
                connection.commit()
            except DBAPIError:
                self._drop(connection)
                raise
            except BaseException:
                self._roll_back(connection)
                raise

    def _begin(self) -> Connection:
        connection = self._kept_or_new()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE" if self.is_sqlite else "BEGIN")
        except DBAPIError:
            self._drop(connection)
            raise
        return connection

    def _roll_back(self, connection: Connection) -> None:
        try:
            connection.rollback()
        except DBAPIError:
            self._drop(connection)

    def _kept_or_new(self) -> Connection:
        kept: tuple[int, Connection] | None = getattr(self._kept, "connection", None)
        if kept is None or kept[0] != os.getpid() or kept[1].closed:
            kept = (os.getpid(), self._autocommit.connect())
            self._kept.connection = kept
            with self._kept_lock:  # dropped connections are forgotten, not kept until dispose
                self._all_kept = [k for k in self._all_kept if not k[1].closed] + [kept]
        return kept[1]

    def _drop(self, connection: Connection) -> None:
        """Forget a connection a database error went through: the next use opens another."""
        self._kept.connection = None
        connection.invalidate()
        connection.close()

    def ask(self, question: Callable[[Connection], T]) -> T:
        """``question(connection)`` on this thread's kept connection (a read:
        it may run twice). A connection found broken, e.g. by a database
        restart since its last use, is replaced and the question asked once
        more, so the first packet after a restart is still answered from the
        data source (a pooled session would have pinged first)."""
        def asked() -> T:
            with self.kept_connection() as connection:
                return question(connection)

        return self._once_more_if_broken(asked, "asking")

    @staticmethod
    def _once_more_if_broken(attempt: Callable[[], T], what: str) -> T:
        """``attempt()``, and once more if it found the kept connection broken
        (it has been dropped by then, so the second try opens a new one)."""
        try:
            return attempt()
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            log.info("the kept database connection was broken (%s); %s again on a new one",
                     type(exc.orig).__name__, what)
        return attempt()

    def dispose(self) -> None:
        with self._kept_lock:
            kept, self._all_kept = self._all_kept, []
        for pid, connection in kept:  # at shutdown: whichever thread kept them, in this process only
            if pid != os.getpid():
                continue
            try:
                connection.close()
            except Exception:  # already broken: nothing to give back
                pass
        self.engine.dispose()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


#: The PostgreSQL advisory lock migrations hold ("pvdm").
_MIGRATION_LOCK = 0x7076646D


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration, under a database-wide lock:
    two at once (two machines starting) take turns, and the second finds
    nothing left to do."""
    from alembic import command

    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            command.upgrade(alembic_config(url), "head")
            return
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{database}.migrate.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            command.upgrade(alembic_config(url), "head")
        finally:
            os.close(fd)
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
            try:
                command.upgrade(alembic_config(url), "head")
            finally:
                holder.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
    finally:
        engine.dispose()


def schema_revision(engine: Engine) -> str | None:
    """The database's migration revision (None: none yet)."""
    if not inspect(engine).has_table("alembic_version"):
        return None
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return None if row is None else str(row[0])


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (cheap, no alembic)."""
    from provisiond.migrations import HEAD

    if not inspect(engine).has_table("alembic_version"):
        return False
    with engine.connect() as conn:
        row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").first()
    return row is not None and row[0] == HEAD


# --------------------------------------------------------------------------- after commit

_ON_COMMIT = "provisiond.on_commit"


def on_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once this session's transaction has committed (and
    never if it rolls back): hooks and notifications must not fire for a
    change that did not happen."""
    session.info.setdefault(_ON_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_on_commit(session: Session) -> None:
    for action in session.info.pop(_ON_COMMIT, []):
        try:
            action()
        except Exception:  # an after-commit action must never undo or break the request
            log.exception("after-commit action failed")


@event.listens_for(Session, "after_rollback")
def _drop_on_commit(session: Session) -> None:
    session.info.pop(_ON_COMMIT, None)
