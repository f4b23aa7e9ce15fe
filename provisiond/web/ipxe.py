"""The iPXE script per MAC, over HTTP: ``GET /boot/ipxe/<mac>``.

DHCP hands iPXE clients this URL instead of a boot file, so the chain-load
loop ends here. Public, like the pxelinux entries served over TFTP: the
firmware holds no credential. An armed host's script carries its one-time
install token (as its pxelinux entry does); every other host gets ``exit``
(local boot), and an unknown MAC gets 404 or local boot per ``unknown_mac``.
"""

from __future__ import annotations

import logging
from functools import cache

from flask import Blueprint, Response, request

from provisiond.errors import NotFound, ValidationError
from provisiond.inventory import fields
from provisiond.inventory.bootplan import BootAction, plan_for_mac
from provisiond.inventory.hosts import record_event
from provisiond.netboot.pxeconfig import EntryRenderer, Loader
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
    with svc.db.write() as session:
        plan = plan_for_mac(session, mac, vault=svc.vault, profiles=svc.profiles,
                            public_url=svc.settings.public_url, unknown=unknown)
        log.info("iPXE script for %s from %s: %s (%s)", mac, request.remote_addr, plan.action, plan.reason)
        if plan.action == BootAction.IGNORE:
            raise NotFound("not found")
        if plan.serial is not None:
            from provisiond.inventory.hosts import get_host

            entry = "installer entry" if plan.action == BootAction.INSTALL else "local boot"
            record_event(session, get_host(session, plan.serial).id, "ipxe",
                         f"iPXE: served the boot script to {request.remote_addr}: {entry} ({plan.reason})")
    text = _renderer(str(svc.settings.boot_templates_dir)).render(plan, Loader.IPXE)
    return Response(text, mimetype="text/plain")
