"""Admission control for agent calls: how many of them may work on the
database at once in one gateway process, and what the others are told.

Thousands of agents reconnect together after a restart of provisiond or a
network cut. Each call needs a database connection for a moment; a process
has at most its pool's 15 (5 kept, 10 more on demand), and a call that
waits past the pool's timeout fails with an error. So at most
:data:`LIMIT` calls work at once; the others wait their turn for up to
:data:`WAIT_SECONDS`, and a call that still finds no room is answered
``503 overloaded`` with a ``Retry-After`` spread over
:data:`RETRY_SPREAD_SECONDS` (the agent adds its own jitter,
:mod:`provisiond.agent.backoff`), so the crowd comes back thinned out and
nobody sees an error. A parked long-poll holds no place: only its reads
and writes do.

Under the gateway's gevent workers the semaphore is gevent's (threading
is monkey-patched), so a waiting call costs a greenlet, not a thread.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from provisiond.errors import Overloaded

log = logging.getLogger("provisiond.admission")

#: Agent calls at work on the database at once, per process.
LIMIT = 8
#: How long a call waits for a place before it is told to come back.
WAIT_SECONDS = 5.0
#: Retry-After is drawn from 1 to this many seconds.
RETRY_SPREAD_SECONDS = 10


class Admission:
    def __init__(self, limit: int = LIMIT, wait_seconds: float = WAIT_SECONDS,
                 spread_seconds: int = RETRY_SPREAD_SECONDS, rng: random.Random | None = None) -> None:
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.spread_seconds = spread_seconds
        self.rng = rng or random.Random()
        self._places = threading.BoundedSemaphore(limit)
        #: Calls told to come back, since the process started (for logs and metrics).
        self.turned_away = 0

    @contextmanager
    def admit(self, what: str) -> Iterator[None]:
        """Hold a place while the block runs; :class:`Overloaded` when none
        frees up within ``wait_seconds``."""
        if not self._places.acquire(timeout=self.wait_seconds):
            self.turned_away += 1
            retry = self.rng.randint(1, self.spread_seconds)
            if self.turned_away % 100 == 1:  # a storm says so once in a while, not once per call
                log.info("agent calls come faster than the database takes them: %s told to come back in %d s "
                         "(%d turned away so far)", what, retry, self.turned_away)
            raise Overloaded(f"provisiond is busy with other agents; come back in {retry} s", retry_after=retry)
        try:
            yield
        finally:
            self._places.release()
