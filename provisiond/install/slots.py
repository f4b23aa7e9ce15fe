"""The concurrent-install cap: who may install now, who waits, in what order.

The decision is taken inside the caller's write transaction after
:func:`lock_slots`, so it holds across gunicorn workers and provisiond
instances: SQLite serialises writers (``BEGIN IMMEDIATE``), PostgreSQL takes a
transaction-scoped advisory lock. This module decides; the lifecycle writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select, text
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


def lock_slots(session: Session) -> None:
    """Serialise slot decisions for the rest of this transaction."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_KEY})
    # SQLite: the write transaction began IMMEDIATE and already holds the lock.


def installing_count(session: Session) -> int:
    return int(session.scalar(
        select(func.count()).select_from(models.Host).where(models.Host.state == HostState.INSTALLING.value)
    ) or 0)


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


def waiting_ahead(session: Session, install: models.Install, now: dt.datetime, stale_seconds: int) -> int:
    """Live waiters that asked before this one (first come, first served)."""
    assert install.queued_at is not None
    fresh = now - dt.timedelta(seconds=stale_seconds)
    return int(session.scalar(
        select(func.count()).select_from(models.Install)
        .join(models.Host, models.Host.id == models.Install.host_id)
        .where(
            models.Install.active.is_(True),
            models.Host.state == HostState.QUEUED.value,
            models.Install.id != install.id,
            models.Install.last_seen_at >= fresh,
            (models.Install.queued_at < install.queued_at)
            | ((models.Install.queued_at == install.queued_at) & (models.Install.id < install.id)),
        )
    ) or 0)


def retry_after(position: int, limits: Limits) -> int:
    """Seconds a waiter should wait: 1 at the head of the queue, growing to
    ``retry_seconds`` a cap's length back, so the queue polls gently."""
    return min(limits.retry_seconds, 1 + (position - 1) * limits.retry_seconds // max(limits.cap, 1))


def decide(session: Session, install: models.Install, now: dt.datetime, limits: Limits) -> SlotDecision:
    """Grant a slot, or say where in the queue the installer stands."""
    in_use = installing_count(session)
    ahead = waiting_ahead(session, install, now, limits.stale_seconds)
    position = ahead + 1
    retry = retry_after(position, limits)
    if in_use + ahead >= limits.cap:
        return SlotDecision(False, position, retry,
                            f"concurrent install limit {limits.cap} reached: position {position}, retry in {retry} s")
    full = _full_groups(session, install.host_id)
    if full:
        name, cap = full[0]
        return SlotDecision(False, position, retry,
                            f"install limit {cap} of group {name} reached: position {position}, retry in {retry} s")
    return SlotDecision(True)


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
