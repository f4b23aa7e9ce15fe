"""The database as a server inside a network namespace must name it: there
127.0.0.1 is the namespace's own loopback, so a local PostgreSQL is reached
through its Unix socket (SQLite URLs are unchanged). Plain functions, for
the netboot lab tests and the DHCP/TFTP benchmarks alike."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

#: Where Debian's and upstream's PostgreSQL put their Unix socket.
SOCKET_FOLDERS = ("/var/run/postgresql", "/run/postgresql", "/tmp")


def namespace_database_url(url: str) -> str:
    """``url`` as seen from inside a network namespace; LookupError (saying
    why) when a local PostgreSQL's Unix socket is nowhere to be found."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgres") or parsed.host not in ("127.0.0.1", "localhost"):
        return url
    port = parsed.port or 5432
    for folder in SOCKET_FOLDERS:
        if Path(folder, f".s.PGSQL.{port}").exists():
            return parsed.set(host=None, query={"host": folder}).render_as_string(hide_password=False)
    raise LookupError(f"PostgreSQL's Unix socket (.s.PGSQL.{port}) was not found: a server in a network "
                      "namespace cannot reach 127.0.0.1")
