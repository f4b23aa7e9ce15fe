"""The power worker: claims queued operations and carries them out, several
BMCs in parallel (bounded), one command at a time per BMC.

``provisiond worker`` runs it beside the reaper and the work queue. Any
number of workers may run against one database. Operations live in the database,
so a restart loses none: a running operation whose worker died is queued
again when its lease passes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from queue import Empty, SimpleQueue

from provisiond import metrics
from provisiond.bell import Bell
from provisiond.errors import ProvisiondError
from provisiond.models import utcnow
from provisiond.power import queue
from provisiond.power.base import DriverOptions, driver_for
from provisiond.power.bmc import Pacer, Policy, carry_out
from provisiond.services import Services

log = logging.getLogger("provisiond.power")


def options_of(services: Services) -> DriverOptions:
    s = services.settings
    return DriverOptions(state_dir=s.fake_bmc_dir or str(s.data_dir / "fake-bmc"),
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
        self.bell = Bell(services.settings.run_dir, "power", services.db)
        #: When its last pass ended (monotonic): a worker's readiness looks at it.
        self.heartbeat = time.monotonic()
        self._running = 0
        self._count_lock = threading.Lock()
        #: Outcomes from the BMC threads, recorded by the worker's next pass.
        self._finished: SimpleQueue[queue.Finished] = SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="bmc")

    def run(self) -> None:
        log.info("power worker: up to %d BMCs at once, %d ms between commands to one BMC",
                 self.parallel, round(self.policy.min_gap * 1000))
        self.bell.listen()
        try:
            self._loop()
        finally:
            self.bell.close()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.pass_once()
                self.heartbeat = time.monotonic()
            except Exception:  # keep working; the database may be back on the next pass
                log.exception("power worker pass failed")
            self.bell.wait(self.poll)
        self._pool.shutdown(wait=True)
        try:
            self._record_finished()
        except Exception:  # they run again when their lease passes
            log.exception("power worker: outcomes not recorded at shutdown")

    def pass_once(self) -> int:
        """Record what finished, requeue abandoned operations, claim what fits,
        start it. Returns how many started. All of the worker's database work
        happens here, in its own thread, on its kept connection."""
        self._record_finished()
        db = self.services.db
        if not db.ask(lambda connection: queue.has_work(connection, utcnow())):
            return 0
        with self._count_lock:
            free = self.parallel - self._running
        with db.kept_write() as connection:
            now = utcnow()  # after the write lock: started_at is when it really started
            for operation_id in queue.requeue_abandoned(connection, now):
                log.warning("power operation %d was interrupted; queued again", operation_id)
            claimed = queue.claim(connection, now, self.lease, free)
        for one in claimed:
            with self._count_lock:
                self._running += 1
            self._pool.submit(self._carry_out, one)
        return len(claimed)

    def _record_finished(self) -> None:
        """Write the outcomes the BMC threads handed back, in one transaction.
        If that fails they are kept for the next pass (and, should the process
        die first, the operations run again when their lease passes)."""
        outcomes = []
        while True:
            try:
                outcomes.append(self._finished.get_nowait())
            except Empty:
                break
        if not outcomes:
            return
        try:
            with self.services.db.kept_write() as connection:
                queue.finish(connection, outcomes)
        except BaseException:
            for outcome in outcomes:
                self._finished.put(outcome)
            raise

    def _carry_out(self, claimed: queue.Claimed) -> None:
        """In a BMC thread: the operation's BMC work only; its outcome goes back
        to the worker. Its time and outcome are counted (:mod:`provisiond.metrics`)."""
        operation_id = claimed.operation_id
        what = f"operation {operation_id}: {queue.describe(claimed.action, claimed.argument, claimed.persistent)}"
        started, fate = time.monotonic(), "failed"
        try:
            work = queue.work_of(claimed, self.services.vault)
            key = work.target.key
            self.pacer.seen_elsewhere(key, claimed.paced_after)  # the gap holds across workers too
            outcome = carry_out(driver_for(work.target, self.options), self.pacer, self.policy,
                                work.action, work.argument, work.persistent, what)
            (log.info if outcome.ok else log.warning)("host %s: %s", claimed.serial, outcome.message)
            fate = "ok" if outcome.ok else "timeout" if outcome.unreachable else "failed"
            finished = queue.Finished(operation_id, outcome.ok, outcome.result, outcome.message, utcnow(),
                                      self.pacer.last_command(key))
        except ProvisiondError as exc:  # the host lost its BMC, or its password cannot be decrypted
            log.warning("host %s: %s failed: %s", claimed.serial, what, exc)
            finished = queue.Finished(operation_id, False, None, f"{what} failed: {exc}", utcnow())
        except Exception as exc:
            log.exception("power operation %d could not be carried out", operation_id)
            finished = queue.Finished(operation_id, False, None, f"operation {operation_id} failed inside "
                                      f"provisiond: {type(exc).__name__}: {exc}", utcnow())
        finally:
            with self._count_lock:
                self._running -= 1
            _count(claimed, fate, time.monotonic() - started)
        self._finished.put(finished)
        self.bell.ring_here()

    def stop(self) -> None:
        self.stopping.set()
        self.bell.ring_here()


def _count(claimed: queue.Claimed, outcome: str, seconds: float) -> None:
    driver = claimed.bmc_type or "none"
    metrics.BMC_OPERATION_SECONDS.labels(claimed.action, claimed.argument, driver).observe(seconds)
    metrics.BMC_OPERATIONS.labels(claimed.action, claimed.argument, driver, outcome).inc()
