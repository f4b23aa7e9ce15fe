"""Parked long-polls: an agent's poll waits here until work arrives for it.

Whoever queues runs rings the ``jobs`` bell after the commit with the ids of
the agents concerned (``*``: everyone). Each process that parks polls listens
on that bell in one waker thread (a greenlet under the gevent gateway) and
wakes exactly the parked polls of those agents, which then claim their runs
from the database. The bell is a hint: a parked poll also looks at the
database every :data:`RECHECK_SECONDS` and before it answers empty.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from provisiond.bell import Bell

log = logging.getLogger("provisiond.jobs")

#: A parked poll looks at the database at least this often, bell or not.
RECHECK_SECONDS = 30.0
#: More agents than this in one ring: everyone is woken (``*``).
RING_MAX_IDS = 400
BELL_NAME = "jobs"


def ring(bell: Bell | None, agent_ids: Iterable[int | None]) -> None:
    """After a commit that queued runs for these agents: wake their polls."""
    ids = sorted({i for i in agent_ids if i is not None})
    if bell is None or not ids:
        return
    bell.ring("*" if len(ids) > RING_MAX_IDS else ",".join(map(str, ids)))


class Parking:
    """This process's parked polls, by agent id."""

    def __init__(self, bell: Bell) -> None:
        self.bell = bell
        self._lock = threading.Lock()
        self._parked: dict[int, list[threading.Event]] = {}
        self._waker: threading.Thread | None = None
        self._stopping = threading.Event()

    def wait(self, agent_id: int, timeout: float) -> bool:
        """Until work may have arrived for ``agent_id`` (True) or ``timeout``
        seconds passed (False)."""
        self._start()
        event = threading.Event()
        with self._lock:
            self._parked.setdefault(agent_id, []).append(event)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                waiting = self._parked.get(agent_id, [])
                if event in waiting:
                    waiting.remove(event)
                if not waiting:
                    self._parked.pop(agent_id, None)

    @property
    def parked(self) -> int:
        with self._lock:
            return sum(len(events) for events in self._parked.values())

    def _start(self) -> None:
        if self._waker is not None:
            return
        with self._lock:
            if self._waker is None:
                self.bell.listen()
                self._waker = threading.Thread(target=self._run, name="jobs-waker", daemon=True)
                self._waker.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                heard = self.bell.collect(5.0)
            except Exception:  # noqa: BLE001 - a broken bell must not stop the wake-ups for good
                log.exception("the jobs bell failed; parked polls fall back to their rechecks")
                self._stopping.wait(1.0)
                continue
            if heard:
                self.wake(_agent_ids(heard))

    def wake(self, agent_ids: set[int] | None) -> None:
        """Wake the parked polls of these agents (None: all of them)."""
        with self._lock:
            keys = list(self._parked) if agent_ids is None else [i for i in agent_ids if i in self._parked]
            events = [event for key in keys for event in self._parked.get(key, [])]
        for event in events:
            event.set()

    def close(self) -> None:
        self._stopping.set()
        self.bell.close()


def _agent_ids(messages: list[str]) -> set[int] | None:
    ids: set[int] = set()
    for message in messages:
        if message in ("", "*"):
            return None
        ids.update(int(part) for part in message.split(",") if part.isdigit())
    return ids

