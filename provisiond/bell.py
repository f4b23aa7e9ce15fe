"""Doorbells between processes: a worker listens, anyone who queued work for
it rings, so it looks at once instead of at its next poll.

A worker's bell is a datagram socket in ``data_dir/run/`` (one per listening
process: ``power-<pid>.bell``); a ring sends one byte to every such socket
(a socket whose process is gone is removed). On PostgreSQL a ring is also a
``NOTIFY provisiond_<name>``, which a listening worker hears over its own
connection, so workers on other machines wake too. A ring is a hint only:
the database is the truth, and every worker still polls.

A ring that finds a bell already ringing (its buffer full) is dropped: one
wake-up is enough.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("provisiond.bell")


class Bell:
    def __init__(self, run_dir: Path, name: str, database: Any = None) -> None:
        """``database``: the :class:`provisiond.db.Database` whose PostgreSQL
        carries the NOTIFY (None, or SQLite: the sockets only)."""
        self.run_dir = run_dir
        self.name = name
        self.database = database if database is not None and not database.is_sqlite else None
        self.channel = f"provisiond_{name}"
        self._socket: socket.socket | None = None
        self._path: Path | None = None
        self._listener: Any = None  # a psycopg connection that LISTENs

    # ------------------------------------------------------------------ ringing

    def ring(self, message: str = "") -> None:
        """Wake every listener (never raises: a ring is only a hint).
        ``message``: a short text the listeners get from :meth:`collect`
        (digits, commas and ``*`` only: it goes into a NOTIFY as it is)."""
        if not re.fullmatch(r"[0-9,*]{0,4000}", message):
            raise ValueError(f"a bell's message is digits, commas and '*' (at most 4000): {message[:40]!r}")
        self._ring_sockets(message.encode() or b"\0")
        if self.database is not None:
            notify = f"NOTIFY {self.channel}" + (f", '{message}'" if message else "")
            try:
                self.database.ask(lambda connection: connection.exec_driver_sql(notify))
            except Exception as exc:  # noqa: BLE001 - the worker's poll finds the work anyway
                log.debug("NOTIFY %s failed: %s", self.channel, exc)

    def _ring_sockets(self, data: bytes) -> None:
        try:
            names = [entry for entry in os.scandir(self.run_dir)
                     if entry.name.startswith(f"{self.name}-") and entry.name.endswith(".bell")]
        except OSError:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for entry in names:
                try:
                    sender.sendto(data, entry.path)
                except BlockingIOError:  # full: it is ringing already
                    pass
                except OSError as exc:
                    if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):  # its process is gone
                        _unlink(entry.path)

    def ring_here(self) -> None:
        """Wake this process's own listener (a thread handing work back)."""
        if self._socket is not None and self._path is not None:
            try:
                self._socket.sendto(b"\0", str(self._path))
            except OSError:  # full: it is ringing already
                pass

    # ------------------------------------------------------------------ listening

    def listen(self) -> None:
        """Become a listener: this process's socket (and, on PostgreSQL, LISTEN)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._path = self.run_dir / f"{self.name}-{os.getpid()}.bell"
        _unlink(str(self._path))
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(self._path))
        self._socket.setblocking(False)
        if self.database is not None:
            self._listen_postgresql()

    def _listen_postgresql(self) -> None:
        import psycopg

        assert self.database is not None
        url = self.database.url.replace("postgresql+psycopg://", "postgresql://")
        try:
            self._listener = psycopg.connect(url, autocommit=True)
            self._listener.execute(f"LISTEN {self.channel}")
        except Exception as exc:  # noqa: BLE001 - polling still works
            log.warning("cannot LISTEN on %s (%s); polling only", self.channel, exc)
            self._listener = None

    def wait(self, timeout: float) -> bool:
        """Until rung or ``timeout`` seconds; True if it was rung. Every ring
        so far is answered by this one wait."""
        waiting = [s for s in (self._socket, self._listener) if s is not None]
        if not waiting:
            select.select([], [], [], timeout)
            return False
        ready, _, _ = select.select(waiting, [], [], timeout)
        return self._drain() or bool(ready)

    def collect(self, timeout: float) -> list[str] | None:
        """Like :meth:`wait`, but the messages of the rings heard (a ring
        without one gives ``""``); None if none came within ``timeout``."""
        waiting = [s for s in (self._socket, self._listener) if s is not None]
        if not waiting:
            select.select([], [], [], timeout)
            return None
        select.select(waiting, [], [], timeout)
        heard: list[str] = []
        self._drain(heard)
        return heard or None

    def _drain(self, heard: list[str] | None = None) -> bool:
        rung = False
        if self._socket is not None:
            while True:
                try:
                    data = self._socket.recv(8192)
                except (BlockingIOError, OSError):
                    break
                rung = True
                if heard is not None:
                    heard.append(data.decode(errors="replace").strip("\0"))
        if self._listener is not None:
            try:
                for notify in self._listener.notifies(timeout=0):
                    rung = True
                    if heard is not None:
                        heard.append(notify.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect on the next listen
                log.warning("the LISTEN connection for %s broke (%s); reconnecting", self.channel, exc)
                self._close_listener()
                self._listen_postgresql()
        return rung

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._path is not None:
            _unlink(str(self._path))
        self._close_listener()

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except Exception:  # noqa: BLE001
                pass
            self._listener = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
