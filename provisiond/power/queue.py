"""The power operation queue: the ONLY module that writes ``power_operations``.

An operation is queued in the caller's transaction (with an Event on the
host's timeline), claimed by a worker (compare-and-set ``queued → running``,
only the oldest operation of each BMC and never while another operation of
that BMC runs), and finished with an outcome Event. A running operation whose
worker died (its lease passed) goes back to the queue, so a restart loses
nothing: every operation is safe to run twice (setting a boot device or a
power state again is harmless; a repeated reset of a machine being armed for
an install is too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.bell import Bell
from provisiond.db import on_commit
from provisiond.errors import NotFound, ValidationError
from provisiond import events
from provisiond.inventory.hosts import record_event
from provisiond.power.base import NoBmc, Target, driver_class
from provisiond.vault import Vault

#: action → the arguments it takes.
ACTIONS: dict[str, tuple[str, ...]] = {
    "power": ("on", "off", "reset", "status", "netboot"),
    "bootdev": ("pxe", "disk", "status"),
}
STATUSES = ("queued", "running", "done", "failed")


def describe(action: str, argument: str, persistent: bool) -> str:
    """``power reset`` / ``set the boot device to pxe (next boot only)``."""
    if action == "bootdev":
        if argument == "status":
            return "read the boot device"
        return f"set the boot device to {argument} ({'persistent' if persistent else 'next boot only'})"
    if argument == "status":
        return "read the power state"
    if argument == "reset":
        return "power reset (power on if off)"
    if argument == "netboot":
        return "boot from the network once (boot device pxe for the next boot, then reset or power on)"
    return f"power {argument}"


def validate(action: str, argument: str) -> None:
    if action not in ACTIONS:
        raise ValidationError("action", f"{action!r} is not one of {', '.join(ACTIONS)}")
    if argument not in ACTIONS[action]:
        raise ValidationError("argument", f"{action} takes one of {', '.join(ACTIONS[action])}, not {argument!r}")


def bmc_target(host: models.Host) -> Target:
    """The host's BMC as operations are keyed and named when queued (no
    password: the worker decrypts it when it claims the operation). The
    primary MAC is looked up only for a BMC without an address (Wake-on-LAN)."""
    if not host.bmc_type:
        raise NoBmc(f"host {host.serial} has no BMC (bmc.type) in the data source; "
                    "power it on or PXE-boot it yourself (provctl install --no-power)")
    primary = None if host.bmc_address else next(
        (nic.mac for nic in sorted(host.nics, key=lambda n: (not n.primary, n.position))), None)
    return Target(serial=host.serial, type=host.bmc_type, address=host.bmc_address, port=host.bmc_port,
                  user=host.bmc_user, mac=primary)


def enqueue(session: Session, host: models.Host, action: str, argument: str, *, by: str, now: dt.datetime,
            persistent: bool = False, install_id: int | None = None, not_before: dt.datetime | None = None,
            bell: Bell | None = None) -> models.PowerOperation:
    """Queue one operation for ``host``'s BMC (409 if it has none)."""
    return enqueue_many(session, [Request(host, action, argument, persistent, install_id, not_before)],
                        by=by, now=now, bell=bell)[0]


@dataclass(frozen=True)
class Request:
    """One operation to queue."""

    host: models.Host
    action: str
    argument: str
    persistent: bool = False
    install_id: int | None = None
    not_before: dt.datetime | None = None


def enqueue_many(session: Session, requests: Sequence[Request], *, by: str, now: dt.datetime,
                 bell: Bell | None = None) -> list[models.PowerOperation]:
    """Queue operations in the caller's transaction, each with an Event
    naming it and its BMC; all are checked first (a bad one raises before
    anything is written), then written together. ``bell`` is rung once the
    transaction has committed: the power workers look at once."""
    targets = []
    for request in requests:
        validate(request.action, request.argument)
        targets.append(bmc_target(request.host))
    operations = [models.PowerOperation(
        host_id=request.host.id, action=request.action, argument=request.argument, persistent=request.persistent,
        status="queued", created_at=now, bmc_key=target.key, requested_by=by, install_id=request.install_id,
        not_before=request.not_before, attempts=0) for request, target in zip(requests, targets)]
    session.add_all(operations)
    session.flush()
    for request, target, operation in zip(requests, targets, operations):
        later = request.not_before is not None and request.not_before > now
        when = f", not before {request.not_before:%H:%M:%S} UTC" if later else ""
        record_event(session, request.host.id, "power",
                     f"queued by {by}: {describe(request.action, request.argument, request.persistent)} on BMC "
                     f"{target.bmc} (operation {operation.id}{when})",
                     {"operation": operation.id, "status": "queued"})
    if bell is not None and operations:
        on_commit(session, bell.ring)
    return operations


def queue_for_installs(session: Session, armed: Sequence[tuple[models.Host, int, dt.datetime | None]], *,
                       by: str, now: dt.datetime, bell: Bell | None = None) -> list[models.PowerOperation]:
    """After arming (host, install id, not before): per host one operation
    that boots the machine from the network once."""
    for host, _, _ in armed:  # a host without a BMC is refused by enqueue_many
        if host.bmc_type and not driver_class(host.bmc_type).sets_boot_device:
            record_event(session, host.id, "power",
                         f"{host.bmc_type} cannot choose the boot device: the machine must try the network "
                         "first by its own boot order")
    return enqueue_many(session, [Request(host, "power", "netboot", install_id=install_id, not_before=not_before)
                                  for host, install_id, not_before in armed], by=by, now=now, bell=bell)


def queue_after_install(session: Session, host: models.Host, install_id: int, now: dt.datetime,
                        bell: Bell | None = None) -> None:
    """After ``done``: boot from disk from now on. Where that cannot be done
    the host still boots locally: its PXE answer is local boot."""
    if not host.bmc_type or not driver_class(host.bmc_type).sets_boot_device:
        why = "it has no BMC" if not host.bmc_type else f"{host.bmc_type} cannot choose the boot device"
        record_event(session, host.id, "power",
                     f"boot device left as it is ({why}); the host boots locally because its PXE answer "
                     "is local boot")
        return
    enqueue(session, host, "bootdev", "disk", persistent=True, by="provisiond", now=now, install_id=install_id,
            bell=bell)


def get(session: Session, operation_id: int) -> models.PowerOperation:
    operation = session.get(models.PowerOperation, operation_id)
    if operation is None:
        raise NotFound(f"no power operation {operation_id}")
    return operation


# --------------------------------------------------------------------------- the worker's side
# The power worker asks and writes on its own kept connection (Database.ask,
# Database.kept_write) with core statements: a pass that claims fifty
# operations is one read and one short write transaction, and the outcomes
# that came back meanwhile are recorded together in another.

_TABLES = models.Base.metadata.tables
_OP, _HOSTS, _NICS = (_TABLES[name] for name in ("power_operations", "hosts", "nics"))


def _due(now: dt.datetime):  # type: ignore[no-untyped-def]
    return or_(_OP.c.not_before.is_(None), _OP.c.not_before <= now)


def _abandoned(now: dt.datetime):  # type: ignore[no-untyped-def]
    """Running, but its worker's lease has passed."""
    return and_(_OP.c.status == "running", _OP.c.lease_until < now)


def has_work(connection: Connection, now: dt.datetime) -> bool:
    """A cheap read before a claiming write transaction: anything due, or abandoned?"""
    due = exists().where(_OP.c.status == "queued", _due(now))
    return bool(connection.scalar(select(or_(due, exists().where(_abandoned(now))))))


def requeue_abandoned(connection: Connection, now: dt.datetime) -> list[int]:
    """Running operations whose worker is gone (lease passed) are queued again."""
    abandoned = connection.execute(
        update(_OP).where(_abandoned(now)).values(status="queued", lease_until=None)
        .returning(_OP.c.id, _OP.c.host_id, _OP.c.action, _OP.c.argument, _OP.c.persistent)).all()
    _insert_events(connection, [
        _event(row.host_id, f"operation {row.id} ({describe(row.action, row.argument, row.persistent)}) "
                            "was interrupted (its worker stopped); queued again",
               {"operation": row.id, "status": "queued"}, now) for row in abandoned])
    return sorted(row.id for row in abandoned)


@dataclass(frozen=True)
class Claimed:
    """A claimed operation as stored: what the worker turns into :class:`Work`."""

    operation_id: int
    action: str
    argument: str
    persistent: bool
    serial: str
    bmc_type: str | None
    bmc_address: str | None
    bmc_port: int | None
    bmc_user: str | None
    bmc_secret: str | None
    mac: str | None
    bmc_key: str | None = None
    #: When the BMC's last command ended (any worker's): the next keeps the gap from then.
    paced_after: dt.datetime | None = None


#: A host's primary MAC: the NIC marked primary, else the first.
_PRIMARY_MAC = (select(_NICS.c.mac).where(_NICS.c.host_id == _HOSTS.c.id)
                .order_by(_NICS.c.primary.desc(), _NICS.c.position).limit(1).scalar_subquery())


def claim(connection: Connection, now: dt.datetime, lease: dt.timedelta, limit: int) -> list[Claimed]:
    """Mark up to ``limit`` operations running and return them, oldest first:
    for each BMC only its oldest unfinished operation, and none of a BMC that
    already has one running. Compare-and-set (``queued → running``), so two
    workers never claim the same operation."""
    if limit <= 0:
        return []
    other = _OP.alias("other")
    blocked = exists().where(other.c.bmc_key == _OP.c.bmc_key, or_(
        other.c.status == "running", and_(other.c.status == "queued", other.c.id < _OP.c.id)))
    earlier = _OP.alias("earlier")
    paced_after = (select(func.max(earlier.c.last_command_at)).where(earlier.c.bmc_key == _OP.c.bmc_key)
                   .scalar_subquery())
    candidates = connection.execute(
        select(_OP.c.id, _OP.c.action, _OP.c.argument, _OP.c.persistent, _HOSTS.c.serial, _HOSTS.c.bmc_type,
               _HOSTS.c.bmc_address, _HOSTS.c.bmc_port, _HOSTS.c.bmc_user, _HOSTS.c.bmc_secret,
               _PRIMARY_MAC.label("mac"), _OP.c.bmc_key, paced_after.label("paced_after"))
        .join(_HOSTS, _HOSTS.c.id == _OP.c.host_id)
        .where(_OP.c.status == "queued", _due(now), ~blocked).order_by(_OP.c.id).limit(limit)).all()
    if not candidates:
        return []
    won = set(connection.scalars(
        update(_OP).where(_OP.c.id.in_([row.id for row in candidates]), _OP.c.status == "queued")
        .values(status="running", started_at=now, lease_until=now + lease, attempts=_OP.c.attempts + 1)
        .returning(_OP.c.id)))
    return [Claimed(*row) for row in candidates if row.id in won]


@dataclass(frozen=True)
class Work:
    """What a worker needs to carry out one claimed operation."""

    operation_id: int
    action: str
    argument: str
    persistent: bool
    target: Target


def work_of(claimed: Claimed, vault: Vault) -> Work:
    """The claimed operation with its BMC's password decrypted (outside any
    transaction). Raises :class:`NoBmc` if the host lost its BMC since."""
    if not claimed.bmc_type:
        raise NoBmc(f"host {claimed.serial} has no BMC (bmc.type) in the data source any more")
    password = vault.decrypt(claimed.bmc_secret) if claimed.bmc_secret else None
    target = Target(serial=claimed.serial, type=claimed.bmc_type, address=claimed.bmc_address,
                    port=claimed.bmc_port, user=claimed.bmc_user, password=password, mac=claimed.mac)
    return Work(claimed.operation_id, claimed.action, claimed.argument, claimed.persistent, target)


@dataclass(frozen=True)
class Finished:
    """How one operation ended, as the worker records it."""

    operation_id: int
    ok: bool
    result: str | None
    message: str
    at: dt.datetime
    #: When its last command to the BMC ended (None: it sent none).
    last_command_at: dt.datetime | None = None


def finish(connection: Connection, outcomes: Sequence[Finished]) -> list[int]:
    """Record outcomes, each with its Event; returns the operations recorded.
    An operation no longer running (cancelled, or queued again meanwhile)
    keeps the outcome it has."""
    recorded, lines = [], []
    for outcome in outcomes:
        host_id = connection.scalar(
            update(_OP).where(_OP.c.id == outcome.operation_id, _OP.c.status == "running")
            .values(status="done" if outcome.ok else "failed", result=outcome.result, message=outcome.message,
                    finished_at=outcome.at, lease_until=None, last_command_at=outcome.last_command_at)
            .returning(_OP.c.host_id))
        if host_id is None:
            continue
        recorded.append(outcome.operation_id)
        lines.append(_event(host_id, outcome.message, {
            "operation": outcome.operation_id, "status": "done" if outcome.ok else "failed",
            "result": outcome.result}, outcome.at))
    _insert_events(connection, lines)
    return recorded


def _event(host_id: int, message: str, data: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    return events.line(events.Kind.POWER, message, host_id=host_id, data=data, time=at)


def _insert_events(connection: Connection, lines: list[dict[str, Any]]) -> None:
    events.write(connection, lines)


def to_dict(operation: models.PowerOperation, serial: str | None = None) -> dict[str, object]:
    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": operation.id, "serial": serial, "action": operation.action, "argument": operation.argument,
        "persistent": operation.persistent, "status": operation.status, "result": operation.result,
        "message": operation.message, "attempts": operation.attempts, "requested_by": operation.requested_by,
        "install_id": operation.install_id, "created_at": iso(operation.created_at),
        "not_before": iso(operation.not_before), "started_at": iso(operation.started_at),
        "finished_at": iso(operation.finished_at),
        "description": describe(operation.action, operation.argument, operation.persistent),
    }


def for_host(session: Session, host_id: int, limit: int = 50) -> Sequence[models.PowerOperation]:
    op = models.PowerOperation
    return session.scalars(select(op).where(op.host_id == host_id).order_by(op.id.desc()).limit(limit)).all()
