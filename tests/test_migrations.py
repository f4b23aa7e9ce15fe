"""The Alembic migrations build exactly the schema the models describe."""

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from provisiond.db import Database, schema_is_current
from provisiond.migrations import HEAD
from provisiond.models import Base


def test_migrations_match_models(db_url):
    database = Database(db_url)
    try:
        with database.engine.connect() as conn, warnings.catch_warnings():
            # SQLite's reflection cannot read an expression index (ix_events_cursor): it skips it, so
            # the comparison covers it on PostgreSQL only.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        assert schema_is_current(database.engine)
    finally:
        database.dispose()


def test_head_constant_is_the_newest_revision():
    from alembic.script import ScriptDirectory

    from provisiond.db import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_current_head() == HEAD


def test_fresh_database_is_not_current(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    assert not schema_is_current(database.engine)
    assert inspect(database.engine).get_table_names() == []
    database.dispose()


def test_sqlite_runs_in_wal_mode(db_url):
    database = Database(db_url)
    if database.is_sqlite:
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    database.dispose()
