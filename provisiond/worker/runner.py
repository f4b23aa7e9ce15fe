"""The work runner: claims due work items and carries them out, a few at a
time, recording each outcome (:mod:`provisiond.worker.queue`) and counting
it (``provisiond_work_items_total{kind,outcome}``: done, retry, failed)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisiond import events, metrics
from provisiond.bell import Bell
from provisiond.install.hooks import KIND as HOOK
from provisiond.models import utcnow
from provisiond.services import Services
from provisiond.worker import queue

log = logging.getLogger("provisiond.worker")

#: How often the runner looks for due items without being rung.
POLL_SECONDS = 1.0


class WorkRunner(threading.Thread):
    def __init__(self, services: Services, parallel: int = 4) -> None:
        super().__init__(name="work-runner", daemon=True)
        self.services = services
        self.parallel = parallel
        # A lease outlives the longest hook with room to spare.
        self.lease = dt.timedelta(seconds=services.settings.hook_timeout_seconds * 2 + 30)
        self.stopping = threading.Event()
        self.bell = Bell(services.settings.run_dir, "work", services.db)
        self.heartbeat = time.monotonic()
        self._running = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="work")
        #: kind → what carries an item out: (payload) -> (message, ok)
        self.handlers: dict[str, Callable[[dict[str, Any]], tuple[str, bool]]] = {HOOK: services.hooks.run}

    def run(self) -> None:
        self.bell.listen()
        try:
            while not self.stopping.is_set():
                try:
                    self.pass_once()
                    self.heartbeat = time.monotonic()
                except Exception:  # keep working; the database may be back on the next pass
                    log.exception("work runner pass failed")
                self.bell.wait(POLL_SECONDS)
        finally:
            self._pool.shutdown(wait=True)
            self.bell.close()

    def pass_once(self) -> int:
        """Claim what fits and start it; returns how many started."""
        db = self.services.db
        if not db.ask(lambda connection: queue.has_work(connection, utcnow())):
            return 0
        with self._lock:
            free = self.parallel - self._running
        with db.kept_write() as connection:
            claimed = queue.claim(connection, utcnow(), self.lease, free)
        for item in claimed:
            with self._lock:
                self._running += 1
            self._pool.submit(self._carry_out, item)
        return len(claimed)

    def run_pending(self) -> int:
        """Carry out every due item now, in this thread (the tests)."""
        done = 0
        while True:
            with self.services.db.kept_write() as connection:
                claimed = queue.claim(connection, utcnow(), self.lease, 100)
            if not claimed:
                return done
            for item in claimed:
                self._carry_out(item, counted=False)
            done += len(claimed)

    def _carry_out(self, item: queue.Claimed, counted: bool = True) -> None:
        try:
            handler = self.handlers.get(item.kind)
            message, ok = handler(item.payload) if handler else (f"no worker knows how to do {item.kind!r}", False)
            what = f"{item.kind} {item.payload.get('script') or item.id}"
            with self.services.db.kept_write() as connection:
                now = utcnow()
                if item.kind == HOOK:
                    events.record(connection, events.Kind.HOOK, message, host_id=item.host_id, time=now,
                                  data={"event": item.payload.get("event"), "hook": item.payload.get("script"),
                                        "ok": ok, "attempt": item.attempt})
                if ok:
                    queue.succeeded(connection, item, now)
                    fate = "done"
                else:
                    fate = "retry" if queue.failed(connection, item, message, now, what) else "failed"
            metrics.WORK_ITEMS.labels(item.kind, fate).inc()
            (log.info if ok else log.warning)("%s (host id %s): %s", what, item.host_id, message)
        except Exception:  # it runs again when its lease passes
            log.exception("work item %d could not be carried out", item.id)
        finally:
            if counted:
                with self._lock:
                    self._running -= 1
            self.bell.ring_here()

    def stop(self) -> None:
        self.stopping.set()
        self.bell.ring_here()
