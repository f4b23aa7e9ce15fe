"""The concurrent-install cap: who may install now, who waits, in what order.

The decision is taken inside the caller's write transaction after
:func:`lock_slots`, so it holds across gunicorn workers and provisiond
instances: SQLite serialises writers (``BEGIN IMMEDIATE``), PostgreSQL takes a
transaction-scoped advisory lock. This module decides; the lifecycle writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Boolean, Integer, bindparam, func, select, text
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.states import HostState

#: Arbitrary, fixed key of the PostgreSQL advisory lock that guards the cap.
_ADVISORY_KEY = 0x70766473  # "pvds"


@dataclass(frozen=True)
class Limits:
    cap: int
    retry_seconds: int
    stale_seconds: int


@dataclass(frozen=True)
class SlotDecision:
    granted: bool
    position: int = 0  # 1-based place in the queue when not granted
    retry_after: int = 0
    message: str = ""
    in_use: int = 0  # slots in use once granted


def lock_slots(session: Session) -> None:
    """Serialise slot decisions for the rest of this transaction (SQLite: the
    write transaction began IMMEDIATE and already holds the lock). On PostgreSQL
    take the advisory lock, and let this transaction's commit skip
    the WAL flush (one round trip for both): a poll that only records that a
    waiter is still waiting loses nothing that matters in a crash. A poll
    that changes a host's state must call :func:`commit_durably` first."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key), set_config('synchronous_commit', 'off', true)"),
                        {"key": _ADVISORY_KEY})


def commit_durably(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT set_config('synchronous_commit', 'on', true)"))


def _full_groups(session: Session, host_id: int) -> list[tuple[str, int]]:
    """The host's groups whose own install cap is reached."""
    capped = session.execute(
        select(models.Group.id, models.Group.name, models.Group.install_cap)
        .join(models.host_groups, models.host_groups.c.group_id == models.Group.id)
        .where(models.host_groups.c.host_id == host_id, models.Group.install_cap.is_not(None))
    ).all()
    full = []
    for group_id, name, cap in capped:
        busy = session.scalar(
            select(func.count()).select_from(models.Host)
            .join(models.host_groups, models.host_groups.c.host_id == models.Host.id)
            .where(models.host_groups.c.group_id == group_id, models.Host.state == HostState.INSTALLING.value)
        ) or 0
        if busy >= cap:
            full.append((name, int(cap)))
    return full


#: Slots in use, live waiters ahead of this one (first come, first served),
#: and whether a group of the host has its own cap: one round trip, built once
#: (this runs under the cap's lock on every poll of every waiting installer).
_DECISION = text("""
    SELECT
      (SELECT count(*) FROM hosts WHERE state = 'installing'),
      (SELECT count(*) FROM installs i JOIN hosts h ON h.id = i.host_id
        WHERE i.active = :yes AND h.state = 'queued' AND i.id <> :install_id
          AND i.last_seen_at >= :fresh
          AND (i.queued_at < :queued_at OR (i.queued_at = :queued_at AND i.id < :install_id))),
      (SELECT count(*) FROM host_groups hg JOIN groups g ON g.id = hg.group_id
        WHERE hg.host_id = :host_id AND g.install_cap IS NOT NULL)
""").bindparams(
    bindparam("yes", type_=Boolean()), bindparam("install_id", type_=Integer()), bindparam("host_id", type_=Integer()),
    bindparam("fresh", type_=models.UtcDateTime()), bindparam("queued_at", type_=models.UtcDateTime()),
)


def retry_after(position: int, limits: Limits) -> int:
    """Seconds a waiter should wait: 1 at the head of the queue, growing to
    ``retry_seconds`` a cap's length back, so the queue polls gently."""
    return min(limits.retry_seconds, 1 + (position - 1) * limits.retry_seconds // max(limits.cap, 1))


@dataclass(frozen=True)
class Waiter:
    """What a decision needs to know about the asking install."""

    install_id: int
    host_id: int
    queued_at: dt.datetime


def decide(session: Session, waiter: Waiter, now: dt.datetime, limits: Limits) -> SlotDecision:
    """Grant a slot, or say where in the queue the installer stands."""
    in_use, ahead, capped = session.execute(_DECISION, {
        "yes": True, "install_id": waiter.install_id, "host_id": waiter.host_id, "queued_at": waiter.queued_at,
        "fresh": now - dt.timedelta(seconds=limits.stale_seconds),
    }).one()
    position = ahead + 1
    retry = retry_after(position, limits)
    if in_use + ahead >= limits.cap:
        return SlotDecision(False, position, retry,
                            f"concurrent install limit {limits.cap} reached: position {position}, retry in {retry} s")
    full = _full_groups(session, waiter.host_id) if capped else []
    if full:
        name, cap = full[0]
        return SlotDecision(False, position, retry,
                            f"install limit {cap} of group {name} reached: position {position}, retry in {retry} s")
    return SlotDecision(True, in_use=in_use + 1)


def queue(session: Session, now: dt.datetime, stale_seconds: int) -> list[tuple[str, dt.datetime, bool]]:
    """Waiting hosts in order: (serial, queued_at, stale)."""
    fresh = now - dt.timedelta(seconds=stale_seconds)
    rows = session.execute(
        select(models.Host.serial, models.Install.queued_at, models.Install.last_seen_at)
        .join(models.Install, models.Install.host_id == models.Host.id)
        .where(models.Install.active.is_(True), models.Host.state == HostState.QUEUED.value)
        .order_by(models.Install.queued_at, models.Install.id)
    ).all()
    return [(serial, queued_at, last_seen < fresh) for serial, queued_at, last_seen in rows]
