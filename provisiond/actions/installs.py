"""Install actions: arm one host or a batch (with or without power), cancel.

Arming with power queues each host's netboot in the same transaction, and
rings the power worker after the commit: no caller can forget it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from provisiond.actions.audit import audited
from provisiond.actions.principal import Principal, Role
from provisiond.errors import ValidationError
from provisiond.inventory import hosts as host_store
from provisiond.inventory.records import HostRecord
from provisiond.models import utcnow
from provisiond.power import queue as power_queue
from provisiond.services import Services

#: The longest pause between two hosts' power-ons in a batch.
MAX_PACE_SECONDS = 3600


def arm(svc: Services, who: Principal, serial: str, *, force: bool = False, power: bool = False) -> dict[str, Any]:
    """Arm one host: its next PXE boot installs it. With ``power`` its BMC
    is told to boot from the network once and to reset (power on if off); a
    host without a BMC is refused then, and nothing is armed."""
    return arm_many(svc, who, [serial], force=force, power=power, pace_seconds=0)[0]


def arm_many(svc: Services, who: Principal, serials: Sequence[str], *, force: bool = False, power: bool = False,
             pace_seconds: float | None = None) -> list[dict[str, Any]]:
    """Arm many hosts, all or none; host i is powered on no earlier than
    i x ``pace_seconds`` from now (default: the setting power_pace_ms)."""
    pace = svc.settings.power_pace_ms / 1000 if pace_seconds is None else pace_seconds
    action = "installs.arm" if len(serials) == 1 else "installs.arm_batch"
    with audited(svc, who, action, Role.OPERATOR, serials) as act:
        _check_batch(serials, pace)
        now = utcnow()
        with svc.db.write() as session:
            hosts = host_store.get_hosts(session, serials)
            armed = svc.lifecycle.arm_many(session, hosts, now, str(who), force=force)
            operations: list[list[int]] = [[] for _ in armed]
            if power:
                queued = power_queue.queue_for_installs(session, [
                    (one.host, one.install_id, now + dt.timedelta(seconds=pace * i) if i else None)
                    for i, one in enumerate(armed)], by=str(who), now=now, bell=svc.power_bell)
                operations = [[operation.id] for operation in queued]
            act.done(session, f"armed {len(armed)} host(s){' with power' if power else ''}"
                              f"{' (forced)' if force else ''}", targets=[one.serial for one in armed])
    return [{"serial": one.serial, "state": "armed", "install_id": one.install_id,
             "expires_at": one.expires_at.isoformat(), "power_operations": ids}
            for one, ids in zip(armed, operations)]


def _check_batch(serials: Sequence[str], pace: float) -> None:
    if not serials or not all(isinstance(s, str) and s for s in serials):
        raise ValidationError("serials", "expected a non-empty list of serial numbers")
    if len(set(serials)) != len(serials):
        twice = next(s for s in serials if list(serials).count(s) > 1)
        raise ValidationError("serials", f"{twice} is listed twice")
    if isinstance(pace, bool) or not isinstance(pace, (int, float)) or not 0 <= pace <= MAX_PACE_SECONDS:
        raise ValidationError("pace_seconds", f"expected a number of seconds from 0 to {MAX_PACE_SECONDS}")


def cancel(svc: Services, who: Principal, serial: str) -> HostRecord:
    """End the host's install as ``failed: cancelled``."""
    with audited(svc, who, "installs.cancel", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:
            svc.lifecycle.cancel(session, serial, utcnow(), str(who))
            record = host_store.load_record(session, serial)
            act.done(session, f"install of {record.serial} cancelled", targets=[record.serial])
            return record
