"""The reaper: fails installs past their deadline, freeing their slots,
ends job runs past their job's deadline, and asks agents for fresh facts
when theirs are older than ``facts_interval_seconds``.

``provisiond worker`` runs :class:`Reaper`; ``provisiond reap`` runs one
pass (for cron). Passes are safe to run concurrently, in any number of
workers: each takes the installs no other holds, and each failure is a
compare-and-set.
A reaped host goes to FAILED(timeout); it is never re-armed by itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from provisiond import events
from provisiond.models import utcnow
from provisiond.services import Services

log = logging.getLogger("provisiond.reaper")
#: How often old events are pruned.
PRUNE_INTERVAL_SECONDS = 3600


def reap_once(services: Services) -> list[str]:
    with services.db.write() as session:
        reaped = services.lifecycle.reap(session, utcnow())
    for serial in reaped:
        log.warning("install of %s passed its deadline without a callback: FAILED(timeout)", serial)
    return reaped


def expire_jobs(services: Services) -> int:
    """End the job runs past their job's deadline (did not run, timed out)."""
    from provisiond.actions.jobs import expire

    ended = expire(services)
    if ended:
        log.info("%d job run(s) ended at their job's deadline (did not run or timed out)", ended)
    return ended


def refresh_facts(services: Services) -> int:
    """Queue a facts job for the hosts whose facts are older than
    ``facts_interval_seconds``."""
    from provisiond.actions.agents import refresh_facts as queue

    asked = queue(services)
    if asked:
        log.info("asked %d host(s) for fresh facts (facts_interval_seconds %d)", asked,
                 services.settings.facts_interval_seconds)
    return asked


def prune_events(services: Services) -> int:
    """Delete the events older than ``event_retention_days`` (0: none)."""
    days = services.settings.event_retention_days
    if not days:
        return 0
    with services.db.write() as session:
        deleted = events.prune(session, utcnow() - dt.timedelta(days=days))
    if deleted:
        log.info("deleted %d timeline event(s) older than %d days (event_retention_days)", deleted, days)
    return deleted


class Reaper(threading.Thread):
    def __init__(self, services: Services, interval: float) -> None:
        super().__init__(name="reaper", daemon=True)
        self.services = services
        self.interval = interval
        self.stopping = threading.Event()
        #: When its last pass ended (monotonic), for the worker's readiness.
        self.heartbeat = time.monotonic()

    def run(self) -> None:
        pruned_at = 0.0
        while not self.stopping.wait(self.interval):
            try:
                reap_once(self.services)
                expire_jobs(self.services)
                refresh_facts(self.services)
                if time.monotonic() - pruned_at >= PRUNE_INTERVAL_SECONDS:
                    prune_events(self.services)
                    pruned_at = time.monotonic()
                self.heartbeat = time.monotonic()
            except Exception:  # keep reaping; the next pass may succeed
                log.exception("reaper pass failed")

    def stop(self) -> None:
        self.stopping.set()
