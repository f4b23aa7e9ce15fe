"""Netboot lines on hosts' timelines, written off the packet path.

DHCP and TFTP answer from one thread each; a database write per answer
would stall it (a commit, and on SQLite the writers' file lock) and, in one
process, take the GIL from it. :meth:`Timeline.record` only queues the
line; a writer thread gathers what queues up for ``linger`` seconds and
writes it in one transaction (one multi-row INSERT), so a boot storm costs a
commit per batch, not one per packet, and a slow disk never delays an
answer. A line reaches the timeline within about ``linger``.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from provisiond import models
from provisiond.db import Database
from provisiond import events

log = logging.getLogger("provisiond.netboot.timeline")


@dataclass(frozen=True)
class _Line:
    serial: str
    message: str
    time: dt.datetime
    data: dict[str, Any] | None


class Timeline:
    """Events of one ``kind`` for hosts named by serial number.

    ``window``: an identical line for the same host within it is not written
    again (a DHCP client retransmitting DISCOVER every few seconds); None
    writes every line. :meth:`flush` waits until everything queued is
    written; :meth:`close` flushes and stops the writer.
    """

    def __init__(self, db: Database, kind: str, *, window: dt.timedelta | None = None, size: int = 4096,
                 batch: int = 2048, linger: float = 0.1) -> None:
        self.db = db
        self.kind = kind
        self.window = window
        self.size = size
        self.batch = batch
        self.linger = linger
        self._seen: OrderedDict[tuple[str, str], dt.datetime] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Line | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    def record(self, serial: str, message: str, now: dt.datetime, data: dict[str, Any] | None = None) -> bool:
        """Queue the line, unless it was written for this host within the window."""
        with self._lock:
            if self.window is not None and not self._first_in_window((serial, message), now):
                return False
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name=f"{self.kind}-timeline", daemon=True)
                self._writer.start()
        self._queue.put(_Line(serial, message, now, data))
        return True

    def _first_in_window(self, key: tuple[str, str], now: dt.datetime) -> bool:
        assert self.window is not None
        last = self._seen.get(key)
        if last is not None and now - last < self.window:
            return False
        self._seen[key] = now
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None:
                # Let a burst gather: a transaction per line would cost the
                # serving thread more of the GIL than the lines are worth.
                time.sleep(self.linger)
            lines = [first]
            while first is not None and len(lines) < self.batch:
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write([line for line in lines if line is not None])
            except Exception:  # the answers went out; only their timeline lines are lost
                log.exception("could not write %d %s timeline lines", len(lines), self.kind)
            finally:
                for _ in lines:
                    self._queue.task_done()
            if None in lines:
                return

    def _write(self, lines: list[_Line]) -> None:
        if not lines:
            return
        with self.db.write() as session:
            ids = dict(session.execute(select(models.Host.serial, models.Host.id)
                                       .where(models.Host.serial.in_({line.serial for line in lines}))).all())
            events.write(session, [events.line(self.kind, line.message, host_id=ids[line.serial], data=line.data,
                                               time=line.time) for line in lines if line.serial in ids])
