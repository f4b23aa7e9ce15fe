"""Which listener serves what, when the provisioning network has its own.

With ``boot_listen`` set (``10.0.0.1:8080``, an address on the provisioning
network), provisiond listens there as well as on ``http_host:http_port``,
and each listener serves its own side only:

- the boot listener: what machines being installed call, holding no
  credential but the install token: the iPXE scripts (``/boot/ipxe/<mac>``),
  kernels and initrds (``/boot/<file>``), the installer endpoints
  (``/install/<token>/...``) and ``/healthz``;
- the admin listener: everything else (the admin API, the console).

A request for the other side's routes gets the same 404 as a route that does
not exist, so the office network never sees an armed host's boot script
(with its install token) and the provisioning network never reaches the
admin API. Without ``boot_listen``, one listener serves both, as before.
"""

from __future__ import annotations

from flask import request

from provisiond.errors import NotFound

#: The blueprints and endpoints a machine being installed calls.
BOOT_BLUEPRINTS = frozenset({"boot", "ipxe", "installer"})
#: Served on every listener: the probes, and what an install's %post fetches
#: for its agent (public files).
BOTH = frozenset({"meta.health", "meta.ready", "agent.download", "agent.download_sha256", "agent.ca_certificate",
                  "agent.unit"})


def split_address(listen: str) -> tuple[str, int]:
    """``10.0.0.1:8080`` → (``10.0.0.1``, 8080)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def guard(boot_listen: str) -> None:
    """Before every request: a 404 for a route of the other listener's side."""
    if not boot_listen or request.endpoint is None or request.endpoint in BOTH:
        return
    host, port = split_address(boot_listen)
    environ = request.environ
    on_boot = environ.get("SERVER_PORT") == str(port) and environ.get("SERVER_NAME") == host
    for_boot = request.blueprint in BOOT_BLUEPRINTS
    if on_boot != for_boot:
        raise NotFound("not found")
