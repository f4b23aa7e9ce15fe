"""The audit trail: the ONE writer of ``audit`` rows, and its reader.

Every action runs inside :func:`audited`: a change that commits records its
principal, targets and outcome in the same transaction
(:meth:`Audited.done`); one that is refused or fails is recorded after its
rollback, with its status and message. Reads are not audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.actions.principal import Principal, Role
from provisiond.errors import Forbidden, ProvisiondError
from provisiond.events import one_line
from provisiond.inventory.fields import serial_key
from provisiond.services import Services

log = logging.getLogger("provisiond.audit")


def authorize(who: Principal, needed: Role, action: str) -> None:
    """403 unless ``who``'s role allows ``needed``."""
    if not who.role.allows(needed):
        raise Forbidden(f"{who} is a {who.role}; {action} needs the {needed} role (or a higher one)")


@dataclass
class Audited:
    """An action under way: what it acts on, and whether it has been recorded."""

    svc: Services
    who: Principal
    action: str
    targets: list[str] = field(default_factory=list)
    recorded: bool = False

    def done(self, session: Session, message: str = "", *, targets: Iterable[str] | None = None,
             data: Mapping[str, Any] | None = None) -> None:
        """Record the action as done, in the transaction that does it."""
        if targets is not None:
            self.targets = list(targets)
        _write(session, self.who, self.action, self.targets, "ok", 200, message, data)
        self.recorded = True


@contextmanager
def audited(svc: Services, who: Principal, action: str, needed: Role,
            targets: Iterable[str] = ()) -> Iterator[Audited]:
    """Authorize ``who`` for ``action``, run it, and record what came of it."""
    act = Audited(svc, who, action, list(targets))
    try:
        authorize(who, needed, action)
        yield act
    except ProvisiondError as exc:
        _after(act, "refused" if exc.status < 500 else "error", exc.status, exc.message)
        raise
    except Exception as exc:
        _after(act, "error", 500, f"{type(exc).__name__}: internal error")
        raise
    else:
        if not act.recorded:  # an action that wrote nothing (a read-only answer) still leaves its line
            _after(act, "ok", 200, "")


def record_refusal(svc: Services, who: Principal, request: str, endpoint: str, message: str) -> None:
    """A request refused before any action ran (its role does not allow the route)."""
    _after(Audited(svc, who, f"route {endpoint}", [request]), "refused", 403, message)


def _after(act: Audited, outcome: str, status: int, message: str) -> None:
    """Record an outcome in a transaction of its own (the action's rolled back)."""
    try:
        with act.svc.db.write() as session:
            _write(session, act.who, act.action, act.targets, outcome, status, message, None)
    except Exception:  # the audit must not hide the action's own error
        log.exception("could not record %s by %s in the audit trail", act.action, act.who)


def _write(session: Session, who: Principal, action: str, targets: Iterable[str], outcome: str, status: int,
           message: str, data: Mapping[str, Any] | None) -> None:
    names = list(dict.fromkeys(targets))
    session.execute(insert(models.AuditEntry).values(
        time=models.utcnow(), principal=str(who), role=who.role.value, action=action,
        targets=_joined(names), outcome=outcome, status=status, message=one_line(message),
        data={**(data or {}), **({"targets": len(names)} if len(names) > 20 else {})}))


def _joined(names: list[str]) -> str:
    """``|SN1|SN2|``: found by ``LIKE '%|sn|%'`` on the lower-cased text."""
    return "|" + "|".join(names) + "|" if names else ""


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class AuditFilter:
    principal: str | None = None
    host: str | None = None
    action: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def entries(session: Session, where: AuditFilter, limit: int = 100, before_id: int | None = None) -> list[
        dict[str, Any]]:
    """Newest first; ``before_id`` pages back."""
    table = models.AuditEntry
    query = select(table).order_by(table.id.desc()).limit(limit)
    if where.principal:
        query = query.where(table.principal == where.principal)
    if where.action:
        query = query.where(table.action == where.action)
    if where.host:
        serial = serial_key(where.host).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(table.targets).like(f"%|{serial}|%", escape="\\"))
    if where.since:
        query = query.where(table.time >= where.since)
    if where.until:
        query = query.where(table.time < where.until)
    if before_id:
        query = query.where(table.id < before_id)
    return [{"id": e.id, "time": e.time.isoformat(), "principal": e.principal, "role": e.role, "action": e.action,
             "targets": [t for t in e.targets.split("|") if t], "outcome": e.outcome, "status": e.status,
             "message": e.message, "data": e.data} for e in session.scalars(query)]
