"""The iPXE script per MAC, over HTTP: ``GET /boot/ipxe/<mac>``.

DHCP hands iPXE clients this URL instead of a boot file, so the chain-load
loop ends here. Public, like the pxelinux entries served over TFTP: the
firmware holds no credential. An armed host's script carries its one-time
install token (as its pxelinux entry does); every other host gets ``exit``
(local boot), and an unknown MAC gets 404 or local boot per ``unknown_mac``.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import cache

from flask import Blueprint, Response, request
from sqlalchemy import bindparam, select

from provisiond import models
from provisiond.errors import NotFound, ValidationError
from provisiond import events
from provisiond.events import one_line
from provisiond.inventory import fields
from provisiond.inventory.bootplan import BootAction, plan_for_mac
from provisiond.inventory.hosts import get_host
from provisiond.netboot.pxeconfig import EntryRenderer, Loader
from provisiond.models import utcnow
from provisiond.services import Services
from provisiond.web import services

log = logging.getLogger("provisiond.web.ipxe")

bp = Blueprint("ipxe", __name__)


@cache
def _renderer(templates: str) -> EntryRenderer:
    from pathlib import Path

    return EntryRenderer(Path(templates))


@bp.get("/boot/ipxe/<mac>")
def script(mac: str) -> Response:
    try:
        mac = fields.mac(mac)
    except ValidationError:
        raise NotFound("not found") from None
    svc = services()
    unknown = BootAction(svc.settings.unknown_mac)
    now = utcnow()
    plan = svc.db.ask(lambda connection: plan_for_mac(connection, mac, vault=svc.vault, profiles=svc.profiles,
                                                      public_url=svc.settings.public_url, unknown=unknown, now=now))
    log.info("iPXE script for %s from %s: %s (%s)", mac, request.remote_addr, plan.action, plan.reason)
    if plan.action == BootAction.IGNORE:
        raise NotFound("not found")
    if plan.serial is not None:
        entry = "installer entry" if plan.action == BootAction.INSTALL else "local boot"
        _boot_line(svc, plan.serial, f"iPXE: served the boot script to {request.remote_addr}: {entry} "
                                     f"({plan.reason})", now)
    text = _renderer(str(svc.settings.boot_templates_dir)).render(plan, Loader.IPXE)
    return Response(text, mimetype="text/plain")


#: An iPXE line already on a host's timeline this recently is not written
#: again: a boot asks once (and its retries at once), so anyone calling the
#: public script URL over and over adds at most a line a minute.
BOOT_LINE_WINDOW = dt.timedelta(seconds=60)

_RECENT_LINE = (select(models.Event.id).join(models.Host, models.Host.id == models.Event.host_id)
                .where(models.Host.serial == bindparam("serial"), models.Event.kind == "ipxe",
                       models.Event.message == bindparam("message"), models.Event.time >= bindparam("since"))
                .limit(1))


def _boot_line(svc: Services, serial: str, message: str, now: dt.datetime) -> None:
    """The timeline line of a served script, unless the same line was
    written within :data:`BOOT_LINE_WINDOW` (checked without a write)."""
    message = one_line(message)
    if svc.db.ask(lambda connection: connection.execute(
            _RECENT_LINE, {"serial": serial, "message": message, "since": now - BOOT_LINE_WINDOW}).first()):
        return
    with svc.db.write() as session:
        events.record(session, events.Kind.IPXE, message, host_id=get_host(session, serial).id)
