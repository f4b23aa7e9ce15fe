"""The durable work queue: the ONLY module that writes ``work_items``.

An item is queued in the transaction that makes it necessary (a state
change queues its hooks), so it exists exactly when that change committed.
A worker claims items with a lease (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so workers never wait for each other's claims; SQLite's writers
take turns), and records an outcome: done; failed and queued again after a
backoff; or failed for good after its last attempt. A running item whose
worker died is claimed again once its lease passes. Each attempt that fails
and each final outcome is an event on the host's timeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, or_, select, update
from sqlalchemy.orm import Session

from provisiond import events, models

_ITEMS = models.Base.metadata.tables["work_items"]
#: The first retry waits this long; each further one twice as long.
BACKOFF = dt.timedelta(seconds=5)
BACKOFF_MAX = dt.timedelta(minutes=10)


def enqueue(target: Session | Connection, kind: str, payload: Mapping[str, Any], *, host_id: int | None,
            now: dt.datetime, max_attempts: int = 3) -> None:
    """Queue one item in the caller's transaction."""
    target.execute(insert(_ITEMS).values(kind=kind, payload=dict(payload), host_id=host_id, state="queued",
                                         attempts=0, max_attempts=max_attempts, run_after=now, created_at=now))


def _due(now: dt.datetime) -> Any:
    return or_(and_(_ITEMS.c.state == "queued", _ITEMS.c.run_after <= now),
               and_(_ITEMS.c.state == "running", _ITEMS.c.lease_until < now))


def has_work(connection: Connection, now: dt.datetime) -> bool:
    """A cheap read before a claiming write: anything due (or abandoned)?"""
    return bool(connection.scalar(select(exists().where(_due(now)))))


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    payload: dict[str, Any]
    host_id: int | None
    attempt: int
    max_attempts: int


def claim(connection: Connection, now: dt.datetime, lease: dt.timedelta, limit: int) -> list[Claimed]:
    """Mark up to ``limit`` due items running (oldest first) and return them;
    an item abandoned by a dead worker (its lease passed) is due again."""
    if limit <= 0:
        return []
    candidates = select(_ITEMS.c.id).where(_due(now)).order_by(_ITEMS.c.id).limit(limit)
    if connection.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    ids = list(connection.scalars(candidates))
    if not ids:
        return []
    rows = connection.execute(
        update(_ITEMS).where(_ITEMS.c.id.in_(ids), _due(now))
        .values(state="running", lease_until=now + lease, attempts=_ITEMS.c.attempts + 1)
        .returning(_ITEMS.c.id, _ITEMS.c.kind, _ITEMS.c.payload, _ITEMS.c.host_id, _ITEMS.c.attempts,
                   _ITEMS.c.max_attempts)).all()
    return sorted((Claimed(*row) for row in rows), key=lambda item: item.id)


def _mine(item: Claimed) -> tuple[Any, ...]:
    """The item as this attempt claimed it: a worker whose lease ran out
    (and whose item another worker claimed again) changes nothing."""
    return (_ITEMS.c.id == item.id, _ITEMS.c.state == "running", _ITEMS.c.attempts == item.attempt)


def succeeded(connection: Connection, item: Claimed, now: dt.datetime) -> None:
    connection.execute(update(_ITEMS).where(*_mine(item))
                       .values(state="done", lease_until=None, finished_at=now, last_error=None))


def failed(connection: Connection, item: Claimed, error: str, now: dt.datetime, what: str) -> bool:
    """An attempt failed: queue the item again after a backoff, or, after its
    last attempt, fail it for good. Each is an event. True if it will run
    again; False too when this attempt was superseded (its lease ran out and
    another worker claimed the item): then nothing is written."""
    again = item.attempt < item.max_attempts
    if again:
        wait = min(BACKOFF * 2 ** (item.attempt - 1), BACKOFF_MAX)
        values: dict[str, Any] = {"state": "queued", "run_after": now + wait}
        message = (f"{what}: attempt {item.attempt} of {item.max_attempts} failed ({error}); "
                   f"again in {wait.total_seconds():g} s")
    else:
        values = {"state": "failed", "finished_at": now}
        message = f"{what}: gave up after {item.attempt} attempt(s) ({error})"
    moved = connection.execute(update(_ITEMS).where(*_mine(item)).values(lease_until=None, last_error=error, **values))
    if not moved.rowcount:
        return False
    events.record(connection, events.Kind.WORK, message, host_id=item.host_id, time=now,
                  data={"item": item.id, "kind": item.kind, "attempt": item.attempt, "again": again})
    return again


def counts(connection: Connection | Session) -> dict[str, int]:
    """Items per state (for metrics and the worker's status)."""
    from sqlalchemy import func

    return dict(connection.execute(select(_ITEMS.c.state, func.count()).group_by(_ITEMS.c.state)).all())
