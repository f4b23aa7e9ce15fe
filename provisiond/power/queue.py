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

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased, selectinload

from provisiond import models
from provisiond.errors import NotFound, ValidationError
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


def bmc_target(host: models.Host, password: str | None = None) -> Target:
    if not host.bmc_type:
        raise NoBmc(f"host {host.serial} has no BMC (bmc.type) in the data source; "
                    "power it on or PXE-boot it yourself (provctl install --no-power)")
    primary = next((nic.mac for nic in sorted(host.nics, key=lambda n: (not n.primary, n.position))), None)
    return Target(serial=host.serial, type=host.bmc_type, address=host.bmc_address, port=host.bmc_port,
                  user=host.bmc_user, password=password, mac=primary)


def enqueue(session: Session, host: models.Host, action: str, argument: str, *, by: str, now: dt.datetime,
            persistent: bool = False, install_id: int | None = None,
            not_before: dt.datetime | None = None) -> models.PowerOperation:
    """Queue one operation for ``host``'s BMC (409 if it has none)."""
    validate(action, argument)
    target = bmc_target(host)
    operation = models.PowerOperation(
        host_id=host.id, action=action, argument=argument, persistent=persistent, status="queued",
        created_at=now, bmc_key=target.key, requested_by=by, install_id=install_id, not_before=not_before,
        attempts=0)
    session.add(operation)
    session.flush()
    when = f", not before {not_before:%H:%M:%S} UTC" if not_before and not_before > now else ""
    record_event(session, host.id, "power",
                 f"queued by {by}: {describe(action, argument, persistent)} on BMC {target.bmc} "
                 f"(operation {operation.id}{when})",
                 {"operation": operation.id, "status": "queued"})
    return operation


def queue_for_install(session: Session, host: models.Host, install_id: int, *, by: str, now: dt.datetime,
                      not_before: dt.datetime | None = None) -> models.PowerOperation:
    """After arming: one operation that boots the machine from the network once."""
    target = bmc_target(host)
    if not driver_class(target.type).sets_boot_device:
        record_event(session, host.id, "power",
                     f"{target.type} cannot choose the boot device: the machine must try the network "
                     "first by its own boot order")
    return enqueue(session, host, "power", "netboot", by=by, now=now, install_id=install_id, not_before=not_before)


def queue_after_install(session: Session, host: models.Host, install_id: int, now: dt.datetime) -> None:
    """After ``done``: boot from disk from now on. Where that cannot be done
    the host still boots locally: its PXE answer is local boot."""
    if not host.bmc_type or not driver_class(host.bmc_type).sets_boot_device:
        why = "it has no BMC" if not host.bmc_type else f"{host.bmc_type} cannot choose the boot device"
        record_event(session, host.id, "power",
                     f"boot device left as it is ({why}); the host boots locally because its PXE answer "
                     "is local boot")
        return
    enqueue(session, host, "bootdev", "disk", persistent=True, by="provisiond", now=now, install_id=install_id)


def get(session: Session, operation_id: int) -> models.PowerOperation:
    operation = session.get(models.PowerOperation, operation_id)
    if operation is None:
        raise NotFound(f"no power operation {operation_id}")
    return operation


# --------------------------------------------------------------------------- the worker's side


def has_work(session: Session, now: dt.datetime) -> bool:
    """A cheap read before a claiming write transaction."""
    op = models.PowerOperation
    return session.scalar(select(op.id).where(op.status == "queued", _due(now)).limit(1)) is not None


def has_abandoned(session: Session, now: dt.datetime) -> bool:
    op = models.PowerOperation
    return session.scalar(select(op.id).where(_abandoned(now)).limit(1)) is not None


def _abandoned(now: dt.datetime):  # type: ignore[no-untyped-def]
    """Running, but its worker's lease has passed."""
    op = models.PowerOperation
    return and_(op.status == "running", op.lease_until < now)


def _due(now: dt.datetime):  # type: ignore[no-untyped-def]
    op = models.PowerOperation
    return or_(op.not_before.is_(None), op.not_before <= now)


def claim(session: Session, now: dt.datetime, lease: dt.timedelta, limit: int) -> list[int]:
    """Mark up to ``limit`` operations running and return their ids: for each
    BMC only its oldest unfinished operation, and none of a BMC that already
    has one running."""
    if limit <= 0:
        return []
    op = models.PowerOperation
    other = aliased(models.PowerOperation)
    blocked = exists().where(other.bmc_key == op.bmc_key, or_(
        other.status == "running", and_(other.status == "queued", other.id < op.id)))
    candidates = session.scalars(
        select(op.id).where(op.status == "queued", _due(now), ~blocked).order_by(op.id).limit(limit)).all()
    claimed = []
    for operation_id in candidates:
        result = session.execute(
            update(op).where(op.id == operation_id, op.status == "queued")
            .values(status="running", started_at=now, lease_until=now + lease, attempts=op.attempts + 1))
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(operation_id)
    return claimed


def requeue_abandoned(session: Session, now: dt.datetime) -> list[int]:
    """Running operations whose worker is gone (lease passed) are queued again."""
    op = models.PowerOperation
    abandoned = session.scalars(select(op).where(_abandoned(now))).all()
    for operation in abandoned:
        operation.status = "queued"
        operation.lease_until = None
        record_event(session, operation.host_id, "power",
                     f"operation {operation.id} ({describe(operation.action, operation.argument, operation.persistent)}) "
                     "was interrupted (its worker stopped); queued again",
                     {"operation": operation.id, "status": "queued"})
    return [operation.id for operation in abandoned]


@dataclass(frozen=True)
class Work:
    """What a worker needs to carry out one claimed operation."""

    operation_id: int
    action: str
    argument: str
    persistent: bool
    target: Target


def load_work(session: Session, operation_id: int, vault: Vault) -> Work:
    operation = session.get(models.PowerOperation, operation_id)
    if operation is None:
        raise NotFound(f"no power operation {operation_id}")
    host = session.scalar(select(models.Host).options(selectinload(models.Host.nics))
                          .where(models.Host.id == operation.host_id))
    assert host is not None
    password = vault.decrypt(host.bmc_secret) if host.bmc_secret else None
    return Work(operation.id, operation.action, operation.argument, operation.persistent,
                bmc_target(host, password))


def finish(session: Session, operation_id: int, ok: bool, result: str | None, message: str,
           now: dt.datetime) -> None:
    operation = session.get(models.PowerOperation, operation_id)
    if operation is None or operation.status != "running":
        return  # cancelled or requeued meanwhile: the other outcome stands
    operation.status = "done" if ok else "failed"
    operation.result = result
    operation.message = message
    operation.finished_at = now
    operation.lease_until = None
    record_event(session, operation.host_id, "power", message,
                 {"operation": operation.id, "status": operation.status, "result": result})


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
