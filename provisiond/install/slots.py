"""The concurrent-install cap: who may install now, who waits, in what order.

A grant is decided inside the caller's write transaction after
:func:`lock_slots`, so the cap holds across gunicorn workers and provisiond
instances: SQLite serialises writers (``BEGIN IMMEDIATE``), PostgreSQL takes a
transaction-scoped advisory lock. "Wait" needs no lock: when the slots in use
plus the live waiters ahead already fill the cap, the answer can only be
stale in the waiter's disfavour, and it asks again. This module decides; the
lifecycle writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Boolean, Connection, Integer, String, bindparam, column, func, select, text
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.states import HostState

#: Arbitrary, fixed key of the PostgreSQL advisory lock that guards the cap.
_ADVISORY_KEY = 0x70766473  # "pvds"
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


@dataclass(frozen=True)
class Limits:
    cap: int
    retry_seconds: int
    stale_seconds: int

    @property
    def heartbeat(self) -> dt.timedelta:
        """How old a waiter's ``last_seen_at`` may grow before a poll rewrites
        it: a tenth of the staleness limit, so most polls write nothing."""
        return dt.timedelta(seconds=max(1, self.stale_seconds // 10))


@dataclass(frozen=True)
class SlotDecision:
    granted: bool
    position: int = 0  # 1-based place in the queue when not granted
    retry_after: int = 0
    message: str = ""
    in_use: int = 0  # slots in use once granted


def lock_slots(connection: Connection) -> None:
    """Serialise grants for the rest of this transaction (SQLite: the write
    transaction began IMMEDIATE and already holds the lock; PostgreSQL: a
    transaction-scoped advisory lock). Statements after it see what earlier
    grants committed."""
    if connection.dialect.name == "postgresql":
        connection.execute(_LOCK, {"key": _ADVISORY_KEY})


def _full_groups(connection: Connection, host_id: int) -> list[tuple[str, int]]:
    """The host's groups whose own install cap is reached."""
    capped = connection.execute(
        select(models.Group.id, models.Group.name, models.Group.install_cap)
        .join(models.host_groups, models.host_groups.c.group_id == models.Group.id)
        .where(models.host_groups.c.host_id == host_id, models.Group.install_cap.is_not(None))
    ).all()
    full = []
    for group_id, name, cap in capped:  # install_cap IS NOT NULL: an int
        busy = connection.scalar(
            select(func.count()).select_from(models.Host)
            .join(models.host_groups, models.host_groups.c.host_id == models.Host.id)
            .where(models.host_groups.c.group_id == group_id, models.Host.state == HostState.INSTALLING.value)
        ) or 0
        if cap is not None and busy >= cap:
            full.append((name, cap))
    return full


#: A poll in one round trip: the token's install ``w`` and its host's state,
#: the slots in use, the live waiters ahead of it (first come, first served)
#: and whether a group of the host has its own cap. A waiter not yet queued
#: is placed at ``:now`` (where it would join). Every poll of every waiting
#: installer runs it.
POLL = text("""
    WITH w AS (
      SELECT i.id, i.host_id, i.active, i.expires_at, COALESCE(i.queued_at, :now) AS queued_at,
             i.last_seen_at, h.state, h.serial
      FROM installs i JOIN hosts h ON h.id = i.host_id WHERE i.token_hash = :token_hash)
    SELECT w.id, w.host_id, w.active, w.expires_at, w.queued_at, w.last_seen_at, w.state, w.serial,
      (SELECT count(*) FROM hosts WHERE state = 'installing') AS in_use,
      (SELECT count(*) FROM installs i JOIN hosts h ON h.id = i.host_id
        WHERE i.active = :yes AND h.state = 'queued' AND i.id <> w.id
          AND i.last_seen_at >= :fresh
          AND (i.queued_at < w.queued_at OR (i.queued_at = w.queued_at AND i.id < w.id))) AS ahead,
      (SELECT count(*) FROM host_groups hg JOIN groups g ON g.id = hg.group_id
        WHERE hg.host_id = w.host_id AND g.install_cap IS NOT NULL) AS capped
    FROM w
""").bindparams(
    bindparam("yes", type_=Boolean()), bindparam("now", type_=models.UtcDateTime()),
    bindparam("fresh", type_=models.UtcDateTime()),
).columns(
    column("id", Integer()), column("host_id", Integer()), column("active", Boolean()),
    column("expires_at", models.UtcDateTime()), column("queued_at", models.UtcDateTime()),
    column("last_seen_at", models.UtcDateTime()), column("state", String()), column("serial", String()),
    column("in_use", Integer()), column("ahead", Integer()), column("capped", Integer()),
)


@dataclass(frozen=True)
class Poll:
    """What one poll saw: the asking install, its host's state, the counts."""

    install_id: int
    host_id: int
    active: bool
    expires_at: dt.datetime
    queued_at: dt.datetime
    last_seen_at: dt.datetime | None
    state: HostState
    serial: str
    in_use: int
    ahead: int
    capped: bool


def poll(connection: Connection, token_hash: str, now: dt.datetime, limits: Limits) -> Poll | None:
    """The install behind a token hash and the cap's counts, or None."""
    row = connection.execute(POLL, {
        "yes": True, "token_hash": token_hash, "now": now,
        "fresh": now - dt.timedelta(seconds=limits.stale_seconds),
    }).first()
    if row is None:
        return None
    return Poll(row.id, row.host_id, row.active, row.expires_at, row.queued_at, row.last_seen_at,
                HostState(row.state), row.serial, row.in_use, row.ahead, bool(row.capped))


def retry_after(position: int, limits: Limits) -> int:
    """Seconds a waiter should wait: 1 at the head of the queue, growing to
    ``retry_seconds`` a cap's length back, so the queue polls gently."""
    return min(limits.retry_seconds, 1 + (position - 1) * limits.retry_seconds // max(limits.cap, 1))


def _waiting(position: int, limits: Limits, reason: str) -> SlotDecision:
    retry = retry_after(position, limits)
    return SlotDecision(False, position, retry, f"{reason}: position {position}, retry in {retry} s")


def still_waiting(seen: Poll, limits: Limits) -> SlotDecision | None:
    """The answer to a waiter's poll when the global cap alone says "wait"
    (a read-only answer: it can only be stale in the waiter's disfavour, and
    it retries); None when the poll might be granted and must be decided
    under the lock."""
    if seen.in_use + seen.ahead >= limits.cap:
        return _waiting(seen.ahead + 1, limits, f"concurrent install limit {limits.cap} reached")
    return None


def decide(connection: Connection, seen: Poll, limits: Limits) -> SlotDecision:
    """Grant a slot, or say where in the queue the installer stands. ``seen``
    must have been read after :func:`lock_slots`."""
    waiting = still_waiting(seen, limits)
    if waiting is not None:
        return waiting
    full = _full_groups(connection, seen.host_id) if seen.capped else []
    if full:
        name, cap = full[0]
        return _waiting(seen.ahead + 1, limits, f"install limit {cap} of group {name} reached")
    return SlotDecision(True, in_use=seen.in_use + 1)


def queue(session: Session, now: dt.datetime, stale_seconds: int) -> list[tuple[str, dt.datetime, bool]]:
    """Waiting hosts in order: (serial, queued_at, stale)."""
    fresh = now - dt.timedelta(seconds=stale_seconds)
    rows = session.execute(
        select(models.Host.serial, models.Install.queued_at, models.Install.last_seen_at)
        .join(models.Install, models.Install.host_id == models.Host.id)
        .where(models.Install.active.is_(True), models.Host.state == HostState.QUEUED.value)
        .order_by(models.Install.queued_at, models.Install.id)
    ).all()
    # A queued install has both times (the first slot request sets them).
    return [(serial, queued_at or now, last_seen is None or last_seen < fresh) for serial, queued_at, last_seen in rows]
