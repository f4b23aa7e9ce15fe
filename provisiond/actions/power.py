"""Power actions: queue an operation on a host's BMC (power, boot device).

BMC work never runs inside a request: the operation is queued in one
transaction and the power worker is rung after the commit.
"""

from __future__ import annotations

from typing import Any

from provisiond.actions.audit import audited
from provisiond.actions.principal import Principal, Role
from provisiond.inventory import hosts as host_store
from provisiond.models import utcnow
from provisiond.power import queue
from provisiond.services import Services


def request(svc: Services, who: Principal, serial: str, action: str, argument: str,
            persistent: bool = False) -> dict[str, Any]:
    """Queue ``action argument`` (``power reset``, ``bootdev pxe``) for the
    host's BMC; answers the queued operation."""
    with audited(svc, who, f"power.{action}", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:  # enqueue validates; a refusal rolls back, nothing is written
            host = host_store.get_host(session, serial)
            operation = queue.enqueue(session, host, action, argument, persistent=persistent, by=str(who),
                                      now=utcnow(), bell=svc.power_bell)
            body = queue.to_dict(operation, host.serial)
            act.done(session, f"{body['description']} queued (operation {body['id']})", targets=[host.serial],
                     data={"operation": body["id"]})
    return body
