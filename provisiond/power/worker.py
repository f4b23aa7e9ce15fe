"""The power worker: claims queued operations and carries them out, several
BMCs in parallel (bounded), one command at a time per BMC.

``provisiond serve`` runs it in its master process beside the reaper;
``provisiond power-worker`` runs it alone. Operations live in the database,
so a restart loses none: a running operation whose worker died is queued
again when its lease passes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from provisiond.models import utcnow
from provisiond.power import queue
from provisiond.power.base import DriverOptions, driver_for
from provisiond.power.bmc import Pacer, Policy, carry_out
from provisiond.services import Services

log = logging.getLogger("provisiond.power")


def options_of(services: Services) -> DriverOptions:
    s = services.settings
    return DriverOptions(state_dir=str(s.data_dir / "fake-bmc"),
                         wol_interface=s.wol_interface, wol_broadcast=s.wol_broadcast, wol_port=s.wol_port)


def policy_of(services: Services) -> Policy:
    s = services.settings
    return Policy(min_gap=s.bmc_min_gap_ms / 1000, budget=float(s.bmc_budget_seconds))


class PowerWorker(threading.Thread):
    def __init__(self, services: Services) -> None:
        super().__init__(name="power-worker", daemon=True)
        s = services.settings
        self.services = services
        self.parallel = s.power_workers
        self.poll = s.power_poll_ms / 1000
        self.policy = policy_of(services)
        self.options = options_of(services)
        self.pacer = Pacer(self.policy.min_gap)
        # A lease outlives the whole retry budget of an operation, with room to spare.
        self.lease = dt.timedelta(seconds=self.policy.budget * 2 + 30)
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._running = 0
        self._count_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="bmc")

    def run(self) -> None:
        log.info("power worker: up to %d BMCs at once, %d ms between commands to one BMC",
                 self.parallel, round(self.policy.min_gap * 1000))
        while not self.stopping.is_set():
            try:
                self.pass_once()
            except Exception:  # keep working; the database may be back on the next pass
                log.exception("power worker pass failed")
            self.wake.wait(self.poll)
            self.wake.clear()
        self._pool.shutdown(wait=True)

    def pass_once(self) -> int:
        """Requeue abandoned operations, claim what fits, start it. Returns how many started."""
        db = self.services.db
        with db.read() as session:
            now = utcnow()
            if not queue.has_work(session, now) and not queue.has_abandoned(session, now):
                return 0
        with db.write() as session:
            now = utcnow()  # after the write lock: started_at is when it really started
            for operation_id in queue.requeue_abandoned(session, now):
                log.warning("power operation %d was interrupted; queued again", operation_id)
            with self._count_lock:
                free = self.parallel - self._running
            works = [queue.load_work(session, operation_id, self.services.vault)
                     for operation_id in queue.claim(session, now, self.lease, free)]
        for work in works:
            with self._count_lock:
                self._running += 1
            self._pool.submit(self._carry_out, work)
        return len(works)

    def _carry_out(self, work: queue.Work) -> None:
        operation_id = work.operation_id
        try:
            what = f"operation {operation_id}: {queue.describe(work.action, work.argument, work.persistent)}"
            outcome = carry_out(driver_for(work.target, self.options), self.pacer, self.policy,
                                work.action, work.argument, work.persistent, what)
            (log.info if outcome.ok else log.warning)("host %s: %s", work.target.serial, outcome.message)
            with self.services.db.write() as session:
                queue.finish(session, operation_id, outcome.ok, outcome.result, outcome.message, utcnow())
        except Exception as exc:
            log.exception("power operation %d could not be carried out", operation_id)
            try:
                with self.services.db.write() as session:
                    queue.finish(session, operation_id, False, None,
                                 f"operation {operation_id} failed inside provisiond: {type(exc).__name__}: {exc}",
                                 utcnow())
            except Exception:
                log.exception("could not record the failure of power operation %d", operation_id)
        finally:
            with self._count_lock:
                self._running -= 1
            self.wake.set()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
