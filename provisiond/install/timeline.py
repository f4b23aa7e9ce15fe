"""Reading the lifecycle: installs, the queue and a status summary (events: provisiond.events)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisiond import events, models
from provisiond.install import slots
from provisiond.states import HostState


def latest_install(session: Session, host_id: int) -> models.Install | None:
    return session.scalar(
        select(models.Install).where(models.Install.host_id == host_id).order_by(models.Install.id.desc()).limit(1)
    )


def recent_events(session: Session, *, host_id: int | None = None, kinds: Iterable[str] = (),
                  limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` events (of one host, of some kinds), oldest
    first, as :func:`provisiond.events.read` gives them: what a page shows
    of a timeline. Not for followers (they read on with a cursor)."""
    query = select(models.Event.id).order_by(models.Event.id.desc()).limit(limit)
    if host_id is not None:
        query = query.where(models.Event.host_id == host_id)
    kinds = list(kinds)
    if kinds:
        query = query.where(models.Event.kind.in_(kinds))
    ids = list(session.scalars(query))
    if not ids:
        return []
    rows = session.execute(select(models.Event.id, func.coalesce(models.Event.txid, 0).label("txid"),
                                  models.Event.host_id, models.Event.serial, models.Event.install_id,
                                  models.Event.time, models.Event.kind, models.Event.message, models.Event.data)
                           .where(models.Event.id.in_(ids)).order_by(models.Event.id)).all()
    return [events.to_dict(row) for row in rows]


def install_to_dict(install: models.Install) -> dict[str, Any]:
    def iso(value: dt.datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": install.id, "profile": install.profile, "active": install.active, "outcome": install.outcome,
        "armed_at": iso(install.armed_at), "armed_by": install.armed_by, "expires_at": iso(install.expires_at),
        "booted_mac": install.booted_mac, "queued_at": iso(install.queued_at),
        "slot_granted_at": iso(install.slot_granted_at), "finished_at": iso(install.finished_at),
    }


def queue_view(session: Session, now: dt.datetime, limits: slots.Limits) -> dict[str, Any]:
    """The caps with their slots in use, the hosts installing, and the
    waiting hosts in arrival order, each with the cap that holds it and its
    place in that cap's queue (``held_by`` null: the global cap; a waiter
    whose caps all have room is next to be granted, ``held_by`` absent)."""
    installing = session.scalars(
        select(models.Host.serial).where(models.Host.state == HostState.INSTALLING.value).order_by(models.Host.serial)
    ).all()
    queued, caps = slots.queue(session, now, limits)
    names = {row.id: row.name for row in session.execute(select(models.Group.id, models.Group.name))}
    waiting = []
    for entry in queued:
        item: dict[str, Any] = {"serial": entry.serial, "stale": entry.stale, "position": None,
                                "queued_at": entry.queued_at.isoformat(),
                                "waiting_seconds": int((now - entry.queued_at).total_seconds())}
        if entry.standing is not None and entry.standing.eligible:
            item.update(position=0, next=True)
        elif entry.standing is not None:
            item.update(position=entry.standing.position,
                        held_by=None if entry.standing.held_by is None else names[entry.standing.held_by])
        waiting.append(item)
    return {"cap": limits.cap, "in_use": len(installing), "installing": list(installing),
            "caps": [{"group": cap.group, "cap": cap.cap, "in_use": cap.in_use} for cap in caps],
            "waiting": waiting}


def status_view(session: Session, now: dt.datetime, limits: slots.Limits) -> dict[str, Any]:
    counts = dict(session.execute(
        select(models.Host.state, func.count()).group_by(models.Host.state)
    ).all())
    return {
        "states": {state.value: int(counts.get(state.value, 0)) for state in HostState},
        "hosts": int(sum(counts.values())),
        "cap": limits.cap,
        "in_use": int(counts.get(HostState.INSTALLING.value, 0)),
        "waiting": int(counts.get(HostState.QUEUED.value, 0)),
    }


def install_outcomes(session: Session) -> dict[str | None, int]:
    """Installs on record per outcome (None: still active)."""
    return {outcome: int(count) for outcome, count in session.execute(
        select(models.Install.outcome, func.count()).group_by(models.Install.outcome))}
