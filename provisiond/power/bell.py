"""The power worker's doorbell: rung when there is work for it (an operation
queued by an HTTP worker, an outcome handed back by a BMC thread), so it
claims at once instead of at its next poll.

A connected pair of datagram sockets, made in the process that runs the
power worker before the HTTP workers fork from it, so they share it. A ring
that finds the bell already ringing (its buffer full) is dropped: one wake-up
is enough. A process without the power worker (``provisiond power-worker``
elsewhere) rings a bell nobody listens to; that worker polls every
``power_poll_ms``.
"""

from __future__ import annotations

import select
import socket


class Bell:
    def __init__(self) -> None:
        self._listen, self._ring = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for end in (self._listen, self._ring):
            end.setblocking(False)

    def ring(self) -> None:
        try:
            self._ring.send(b"\0")
        except OSError:  # full (it is ringing already) or closed at shutdown
            pass

    def wait(self, timeout: float) -> bool:
        """Until rung or ``timeout`` seconds; True if it was rung. Every ring
        so far is answered by this one wait."""
        ready, _, _ = select.select([self._listen], [], [], timeout)
        rung = False
        while True:
            try:
                self._listen.recv(16)
            except BlockingIOError:
                return rung or bool(ready)
            rung = True

    def close(self) -> None:
        self._listen.close()
        self._ring.close()
