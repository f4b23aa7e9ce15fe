"""``provisiond worker``: the power worker, the reaper (and the event
pruning) and the work runner (hooks), in one process, until SIGTERM.

Any number may run against one database: power operations and work items
are claimed once each, the reaper's passes do not trip over each other, and
the gap between two commands to one BMC is kept in the database.
"""

from __future__ import annotations

import logging
import signal
import threading

from provisiond.health import HealthListener, Loop, notify_ready
from provisiond.install.reaper import Reaper
from provisiond.power.worker import PowerWorker
from provisiond.services import Services
from provisiond.worker.runner import POLL_SECONDS, WorkRunner

log = logging.getLogger("provisiond.worker")


class WorkerProcess:
    def __init__(self, services: Services) -> None:
        s = services.settings
        self.services = services
        self.power = PowerWorker(services)
        self.reaper = Reaper(services, s.reaper_interval_seconds)
        self.runner = WorkRunner(services)
        self.loops = [
            Loop("the power worker", self.power, lambda: self.power.heartbeat, max(10.0, 20 * self.power.poll)),
            Loop("the reaper", self.reaper, lambda: self.reaper.heartbeat, 3 * s.reaper_interval_seconds + 10),
            Loop("the work runner", self.runner, lambda: self.runner.heartbeat, 20 * POLL_SECONDS + 10),
        ]
        self.health = (HealthListener(s.worker_health_listen, services.db, self.loops, "worker")
                       if s.worker_health_listen else None)

    def start(self) -> None:
        self.services.hooks.prepare()
        for thread in (self.power, self.reaper, self.runner):
            thread.start()
        if self.health is not None:
            self.health.start()
        log.info("worker: power operations, reaper (every %d s), hooks", self.services.settings.reaper_interval_seconds)

    def stop(self) -> None:
        for thread in (self.runner, self.reaper, self.power):
            thread.stop()
        for thread in (self.runner, self.reaper, self.power):
            thread.join(30)
        if self.health is not None:
            self.health.stop()


def run_until_signalled(services: Services) -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    worker = WorkerProcess(services)
    worker.start()
    notify_ready("worker")
    try:
        while not stop.wait(1.0):
            if not all(loop.thread.is_alive() for loop in worker.loops):
                log.error("a worker loop stopped; exiting so the service manager restarts the worker")
                raise SystemExit(1)
    finally:
        worker.stop()
