"""The reaper: fails installs past their deadline, freeing their slots.

``provisiond serve`` runs :class:`Reaper` in its master process; ``provisiond
reap`` runs one pass (for cron, or several servers sharing one database —
passes are safe to run concurrently: each failure is a compare-and-set).
A reaped host goes to FAILED(timeout); it is never re-armed by itself.
"""

from __future__ import annotations

import logging
import threading

from provisiond.models import utcnow
from provisiond.services import Services

log = logging.getLogger("provisiond.reaper")


def reap_once(services: Services) -> list[str]:
    with services.db.write() as session:
        reaped = services.lifecycle.reap(session, utcnow())
    for serial in reaped:
        log.warning("install of %s passed its deadline without a callback: FAILED(timeout)", serial)
    return reaped


class Reaper(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="reaper", daemon=True)
        self.services = services
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                reap_once(self.services)
            except Exception:  # keep reaping; the next pass may succeed
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self.stopping.set()
