"""The timeline: the ONE module that writes events, and the one that reads
them with a cursor.

An event is one line of a host's timeline (``provctl log``, the API, the
console): a time, a :class:`Kind`, a message and some data. Every arrow of
the flow writes one, whatever process takes it (HTTP workers, the worker,
netboot).

Writing: :func:`write` (one INSERT for any number of lines), or, for the
lifecycle's one-statement state change on PostgreSQL, :data:`INSERT_COLUMNS`
and :func:`values_sql`. A message may carry text from outside provisiond (an
installer's progress report, a hardware report, a hook's output), so it is
made one line here: line breaks and other control characters become
visible escapes (``\\n``, ``\\x1b``), so nobody can forge a second line or
drive a terminal through a timeline. Each event keeps its host's serial
number: deleting a host keeps its events (for audit), found by serial.

Reading: :func:`read` returns the events after a cursor, never missing and
never repeating one, even when transactions commit out of the order their
events were inserted in (PostgreSQL hands out ids at insert time, so "id >
the last id seen" can skip a line whose transaction commits late). On
PostgreSQL each event records its transaction's id (``txid``); a reader
returns, in (txid, id) order, only events of transactions older than every
transaction still running, so nothing can later appear before its cursor.
SQLite runs one writer at a time: id order is commit order. A follower sees
an event once the transactions that began before its own have ended: a
writing transaction left open on the PostgreSQL cluster delays followers
(a read-only one does not).
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, bindparam, text
from sqlalchemy.orm import Session

from provisiond.event_text import CONTROL, MESSAGE_LIMIT, Cursor, has_control, one_line  # noqa: F401 (its API)

class Kind(str, enum.Enum):
    """What an event is about. Stored as its value."""

    HOST = "host"  # the data source: a host added, edited, removed, imported
    ARMED = "armed"
    IPXE = "ipxe"  # netboot: the iPXE script served
    DHCP = "dhcp"
    TFTP = "tftp"
    KICKSTART = "kickstart"
    HARDWARE = "hardware"
    SLOT = "slot"
    PROGRESS = "progress"
    INSTALLED = "installed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    POWER = "power"
    HOOK = "hook"
    WORK = "work"  # the durable work queue: an attempt and its outcome
    AGENT = "agent"  # an agent enrolled, was accepted, rejected, denied, revoked
    HANDOFF = "handoff"  # the host went to its agent, and its hand-off jobs' outcome
    JOB = "job"  # a job's result on the host
    FACTS = "facts"  # the host's first facts, and what changed in them since

    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------- writing

#: The columns every event is written with (``txid`` is the database's own
#: default on PostgreSQL; ``serial`` is looked up from ``host_id``).
INSERT_COLUMNS = "events (host_id, serial, install_id, time, kind, message, data)"


def values_sql(host_id: str = ":host_id") -> str:
    """The VALUES of one event, the serial read from its host: ``host_id``
    is a bind or a column of a ``SELECT`` (the lifecycle's ``moved`` row)."""
    return (f"{host_id}, (SELECT h.serial FROM hosts h WHERE h.id = {host_id}), :install_id, :now, :kind, "
            ":message, :data")


def _data_type() -> Any:
    from provisiond.models import Event

    return Event.__table__.c.data.type


def _statement() -> Any:
    from provisiond.models import UtcDateTime

    return text(f"INSERT INTO {INSERT_COLUMNS} VALUES ({values_sql()})").bindparams(
        bindparam("host_id", type_=Integer()), bindparam("install_id", type_=Integer()),
        bindparam("now", type_=UtcDateTime()), bindparam("data", type_=_data_type()))


_INSERT: Any = None


def line(kind: Kind | str, message: str, *, host_id: int | None, install_id: int | None = None,
         data: Mapping[str, Any] | None = None, time: dt.datetime | None = None) -> dict[str, Any]:
    """One event to :func:`write` (the message made one line here)."""
    from provisiond.models import utcnow

    return {"host_id": host_id, "install_id": install_id, "now": time or utcnow(), "kind": Kind(kind).value,
            "message": one_line(message), "data": dict(data or {})}


def write(target: Session | Connection, lines: Sequence[Mapping[str, Any]]) -> None:
    """Write events in the caller's transaction, in one statement."""
    global _INSERT
    if not lines:
        return
    if _INSERT is None:
        _INSERT = _statement()
    target.execute(_INSERT, list(lines))


def record(target: Session | Connection, kind: Kind | str, message: str, *, host_id: int | None,
           install_id: int | None = None, data: Mapping[str, Any] | None = None,
           time: dt.datetime | None = None) -> None:
    """Write one event in the caller's transaction."""
    write(target, [line(kind, message, host_id=host_id, install_id=install_id, data=data, time=time)])


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    #: Where to read on from (the last event's cursor, or the one asked with).
    cursor: Cursor


_COLUMNS = "e.id, COALESCE(e.txid, 0) AS txid, e.host_id, e.serial, e.install_id, e.time, e.kind, e.message, e.data"


def read(connection: Connection | Session, after: Cursor = Cursor(), *, host_id: int | None = None,
         serial: str | None = None, kinds: Iterable[str] = (), limit: int = 1000) -> Page:
    """The events after ``after``, oldest first, at most ``limit``: of one
    host (``host_id``), of whatever host had ``serial`` (deleted ones too),
    or all; of some kinds only (``kinds``)."""
    from provisiond.inventory.fields import serial_key
    from provisiond.models import UtcDateTime

    is_postgresql = (connection.get_bind() if isinstance(connection, Session) else connection).dialect.name \
        == "postgresql"
    where = ["(COALESCE(e.txid, 0), e.id) > (:txid, :id)"]  # a range of ix_events_cursor
    params: dict[str, Any] = {"txid": after.txid, "id": after.id, "limit": limit}
    if is_postgresql:  # only transactions older than every running one: nothing can appear before them later
        where.append("COALESCE(e.txid, 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    if host_id is not None:
        where.append("e.host_id = :host_id")
        params["host_id"] = host_id
    if serial is not None:
        where.append("lower(e.serial) = :serial")
        params["serial"] = serial_key(serial)
    kinds = list(kinds)
    for index, kind in enumerate(kinds):
        params[f"kind{index}"] = kind
    if kinds:
        where.append(f"e.kind IN ({', '.join(f':kind{i}' for i in range(len(kinds)))})")
    query = text(f"SELECT {_COLUMNS} FROM events e WHERE {' AND '.join(where)} "
                 "ORDER BY COALESCE(e.txid, 0), e.id LIMIT :limit").columns(
        time=UtcDateTime(), data=_data_type())
    rows = connection.execute(query, params).all()
    events = [to_dict(row) for row in rows]
    cursor = Cursor(rows[-1].txid, rows[-1].id) if rows else after
    return Page(events, cursor)


def to_dict(row: Any) -> dict[str, Any]:
    return {"id": row.id, "cursor": str(Cursor(row.txid, row.id)), "time": row.time.isoformat(), "kind": row.kind,
            "serial": row.serial, "message": row.message, "install_id": row.install_id, "data": row.data}


def prune(connection: Connection | Session, before: dt.datetime) -> int:
    """Delete the events older than ``before`` (``event_retention_days``)."""
    from sqlalchemy import delete

    from provisiond.models import Event

    result = connection.execute(delete(Event).where(Event.time < before))
    return int(getattr(result, "rowcount", 0) or 0)


def cursor_of(connection: Connection | Session, event_id: int) -> Cursor:
    """The cursor just after event ``event_id`` (for readers that kept an
    event id, as ``since=`` did before cursors)."""
    txid = connection.execute(text("SELECT COALESCE(txid, 0) FROM events WHERE id = :id"), {"id": event_id}).scalar()
    return Cursor(int(txid or 0), event_id)


def newest(connection: Connection | Session) -> Cursor:
    """A cursor after every event a reader can see now: a follower starting
    here sees only what comes next, and misses nothing."""
    is_postgresql = (connection.get_bind() if isinstance(connection, Session) else connection).dialect.name \
        == "postgresql"
    frontier = ("WHERE COALESCE(txid, 0) < pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
                if is_postgresql else "")
    row = connection.execute(text(f"SELECT COALESCE(txid, 0) AS txid, id FROM events {frontier}"
                                  "ORDER BY COALESCE(txid, 0) DESC, id DESC LIMIT 1")).first()
    return Cursor(row.txid, row.id) if row else Cursor()
