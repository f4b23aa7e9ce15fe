"""The power API: queue BMC operations and poll them.

BMC work never runs inside a request: these routes queue an operation and
answer ``202 Accepted`` with its id and a ``Location`` to poll; the power
worker carries it out (:mod:`provisiond.power.worker`).
"""

from __future__ import annotations


from flask import Blueprint, jsonify

from provisiond.errors import NotFound, ValidationError
from provisiond.inventory import hosts as host_store
from provisiond.models import Host, PowerOperation
from provisiond.power import queue
from provisiond.web import services
from provisiond.actions.principal import Role
from provisiond.actions import power as power_actions
from provisiond.web.auth import needs, principal
from provisiond.web.bodies import flag, json_body, only_fields

bp = Blueprint("power", __name__, url_prefix="/api/v1")


def _queued(serial: str, action: str, argument: str, persistent: bool = False):  # type: ignore[no-untyped-def]
    body = power_actions.request(services(), principal(), serial, action, argument, persistent)
    response = jsonify(body)
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/power/{body['id']}"
    return response


def _choice(body: dict[str, object], field: str, choices: tuple[str, ...]) -> str:
    """The body's ``field``, one of ``choices``: else a 400 naming that field."""
    value = body.get(field)
    if not isinstance(value, str) or value not in choices:
        got = "" if value is None else f", not {value!r}"
        raise ValidationError(field, f"expected one of {', '.join(choices)}{got}")
    return value


@bp.post("/hosts/<serial>/power")
@needs(Role.OPERATOR)
def power(serial: str):  # type: ignore[no-untyped-def]
    """Queue ``{"action": "on"|"off"|"reset"|"status"}`` for the host's BMC."""
    body = json_body()
    only_fields(body, {"action"})
    return _queued(serial, "power", _choice(body, "action", queue.ACTIONS["power"]))


@bp.post("/hosts/<serial>/bootdev")
@needs(Role.OPERATOR)
def bootdev(serial: str):  # type: ignore[no-untyped-def]
    """Queue ``{"device": "pxe"|"disk"|"status", "persistent": bool}``."""
    body = json_body()
    only_fields(body, {"device", "persistent"})
    device = _choice(body, "device", queue.ACTIONS["bootdev"])
    persistent = flag(body, "persistent")
    if device == "status" and persistent:
        raise ValidationError("persistent", "only applies when setting a device")
    return _queued(serial, "bootdev", device, persistent)


@bp.get("/hosts/<serial>/power")
@needs(Role.VIEWER)
def host_operations(serial: str):  # type: ignore[no-untyped-def]
    """The host's latest power operations, newest first."""
    with services().db.read() as session:
        host = host_store.get_host(session, serial)
        body = [queue.to_dict(op, serial) for op in queue.for_host(session, host.id)]
    return jsonify({"serial": serial, "operations": body})


@bp.get("/power/<operation_id>")
@needs(Role.VIEWER)
def operation(operation_id: str):  # type: ignore[no-untyped-def]
    """One power operation: queued, running, done (with the BMC's answer) or failed (with why)."""
    if not operation_id.isdigit() or len(operation_id) > 18:
        raise NotFound(f"no power operation {operation_id!r}")
    with services().db.read() as session:
        op: PowerOperation = queue.get(session, int(operation_id))
        host = session.get(Host, op.host_id)
        body = queue.to_dict(op, host.serial if host else None)
    return jsonify(body)
