"""The one-machine command's supervisor: each role in a child process.

``provisiond run`` (and ``demo``) start ``serve``, ``worker`` and, with
netboot_address, ``netboot``; SIGTERM or Ctrl-C stops them all. If one of
them stops by itself, the others are stopped too and the supervisor exits
with its status, so a service manager sees one failure and restarts the
lot. Each child gets SIGTERM if the supervisor dies (even by SIGKILL).

Before the supervisor starts (``provisiond run``/``demo``), the command
prepares the machine's metrics directory (:mod:`provisiond.metric_files`):
emptied if no running process uses it, and named in the environment the
children inherit, so one scrape of ``serve`` adds up all of their counters.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger("provisiond")

#: How long the children get to stop before they are killed.
STOP_SECONDS = 20


def _die_with_parent() -> None:
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, roles: Mapping[str, Sequence[str]]) -> None:
        self.roles = dict(roles)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._request_stop())
        for role, command in self.roles.items():
            self.children[role] = subprocess.Popen(list(command), preexec_fn=_die_with_parent)
            log.info("started %s (pid %d)", role, self.children[role].pid)
        status = 0
        while not self._stopping:
            ended = next(((role, child) for role, child in self.children.items() if child.poll() is not None), None)
            if ended is not None:
                role, child = ended
                status = child.returncode or 1
                log.error("%s stopped (exit status %s); stopping the others", role, child.returncode)
                break
            time.sleep(0.2)
        self._stop_all()
        return status

    def _request_stop(self) -> None:
        self._stopping = True

    def _stop_all(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for role, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %d s: killed", role, STOP_SECONDS)
                child.kill()
                child.wait()
