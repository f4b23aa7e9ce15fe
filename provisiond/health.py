"""Health of a role that is not HTTP (``worker``, ``netboot``): a small
listener (``worker_health_listen``, ``netboot_health_listen``) answering

- ``GET /healthz``: 200 while the process runs;
- ``GET /readyz``: 200 when the database answers, its schema is current and
  every loop of the role has come round recently; else 503 with what is
  wrong (JSON either way);
- ``GET /metrics``: the Prometheus counters (:mod:`provisiond.metrics`) of
  every provisiond process of this machine (they share its metrics
  directory), without the state read from the database (``serve`` has it).

The listener binds the configured (local) address and asks for no
credential: it tells a prober or scraper that can reach it whether the role
works and what it counted (DHCP and TFTP answers, BMC operations, hook
runs), never anything about hosts. Keep it off networks you do not trust.
``provisiond serve`` answers ``/healthz`` and ``/readyz`` itself, and
``/metrics`` to a viewer's token.

Under systemd (``Type=notify``) each role says ``READY=1`` once it serves:
gunicorn does for ``serve``; :func:`notify_ready` for ``worker`` and
``netboot``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from provisiond.db import Database, schema_is_current
from provisiond.metrics import exposition

log = logging.getLogger("provisiond.health")


@dataclass(frozen=True)
class Loop:
    """A loop a role runs: alive if its thread runs and it came round within ``within`` seconds."""

    name: str
    thread: threading.Thread
    heartbeat: Callable[[], float]  # monotonic time of its last completed pass
    within: float


def readiness(db: Database, loops: list[Loop]) -> tuple[bool, dict[str, Any]]:
    problems: list[str] = []
    try:
        if not schema_is_current(db.engine):
            problems.append("the database schema is not current: run `provisiond db upgrade`")
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        problems.append(f"the database does not answer: {type(exc).__name__}")
    now = time.monotonic()
    for loop in loops:
        if not loop.thread.is_alive():
            problems.append(f"{loop.name} is not running")
        elif now - loop.heartbeat() > loop.within:
            problems.append(f"{loop.name} has not come round for {now - loop.heartbeat():.0f} s")
    return not problems, {"status": "ready" if not problems else "not ready", "problems": problems}


def notify_ready(role: str) -> None:
    """Tell the service manager this role is up (a no-op without ``NOTIFY_SOCKET``).
    gunicorn's own sd_notify speaks the protocol; ``serve`` uses it too."""
    from gunicorn.systemd import sd_notify

    sd_notify(f"READY=1\nSTATUS=provisiond {role} running", log)


class HealthListener:
    def __init__(self, listen: str, db: Database, loops: list[Loop], role: str) -> None:
        host, _, port = listen.rpartition(":")
        ready = lambda: readiness(db, loops)  # noqa: E731

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/healthz":
                    self._answer(200, {"status": "ok", "role": role})
                elif self.path == "/readyz":
                    ok, body = ready()
                    self._answer(200 if ok else 503, {**body, "role": role})
                elif self.path.partition("?")[0] == "/metrics":
                    self._send(200, *exposition(self.headers.get("Accept")))
                else:
                    self._answer(404, {"error": "not_found", "message": "GET /healthz, /readyz or /metrics"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:  # quiet: probes come every few seconds
                pass

        self.server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"{role}-health", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]  # type: ignore[return-value]

    def start(self) -> None:
        self.thread.start()
        log.info("health at http://%s:%d/healthz and /readyz, metrics at /metrics", *self.address)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
