"""`provisiond netboot`: the DHCP and TFTP services of one boot segment.

Both ask the database at the moment a packet arrives (through
:mod:`provisiond.inventory.bootplan`); there is no sync step. The daemon
shares nothing with the HTTP service but the database, so one netboot
daemon per L2 segment (or behind a DHCP relay) can serve many HTTP
instances on PostgreSQL.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Protocol

from provisiond.health import HealthListener, Loop, notify_ready
from provisiond.services import Services

log = logging.getLogger("provisiond.netboot")


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @property
    def thread(self) -> threading.Thread | None: ...


class NetbootDaemon:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.running: list[Service] = []

    def start(self) -> None:
        from provisiond.netboot.tftp import TftpService

        settings = self.services.settings
        wanted: list[Service] = [TftpService(self.services)]
        if settings.dhcp_mode != "off":
            from provisiond.netboot.dhcp import DhcpService

            wanted.append(DhcpService(self.services))
        try:
            for service in wanted:
                service.start()
                self.running.append(service)
        except Exception:
            self.stop()
            raise
        log.info("netboot: DHCP %s, TFTP on port %d, boot root %s", settings.dhcp_mode, settings.tftp_port,
                 settings.pxelinux_dir)

    def loops(self) -> list[Loop]:
        """What readiness watches: each service's thread, alive. (The DHCP
        loop sleeps in select() until a packet comes, so there is no
        heartbeat to ask; a thread that ends has failed.)"""
        return [Loop(service.name, service.thread, time.monotonic, float("inf"))
                for service in self.running if service.thread is not None]

    def stop(self) -> None:
        while self.running:
            service = self.running.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)


def run_until_signalled(services: Services) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    daemon = NetbootDaemon(services)
    daemon.start()
    loops = daemon.loops()
    health = None
    if services.settings.netboot_health_listen:
        health = HealthListener(services.settings.netboot_health_listen, services.db, loops, "netboot")
        health.start()
    notify_ready("netboot")
    try:
        while not stop.wait(1.0):
            if not all(loop.thread.is_alive() for loop in loops):
                log.error("a netboot service stopped; exiting so the service manager restarts netboot")
                raise SystemExit(1)
    finally:
        if health is not None:
            health.stop()
        daemon.stop()
