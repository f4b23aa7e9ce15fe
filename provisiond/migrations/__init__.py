"""Alembic migrations. ``HEAD`` is the newest revision: bump it with each new one."""

HEAD = "0014"
