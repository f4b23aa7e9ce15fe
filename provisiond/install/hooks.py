"""Operator hooks: executables in ``hooks/<event>.d/`` run on lifecycle events.

Each runs in the worker (``provisiond worker``), queued in the transaction
of the change that fires it, with a timeout and this environment:

    PROVISIOND_EVENT     on-armed | on-installing | on-installed | on-failed
    PROVISIOND_SERIAL    the host's serial number
    PROVISIOND_HOSTNAME  its host name
    PROVISIOND_MAC       its primary MAC
    PROVISIOND_IP        its address (empty if none)
    PROVISIOND_PROFILE   its install profile
    PROVISIOND_STATE     the state it just entered
    PROVISIOND_REASON    why (for on-failed: hw_mismatch, timeout, installer_error, cancelled)

Output and exit status become events on the host's timeline, and each run
is counted (``provisiond_hook_runs_total{event,hook,outcome}``). A hook that
fails (exit status, timeout) is run again, backing off, up to
``hook_attempts`` times in all; make hooks safe to repeat. A failing or
hanging hook never blocks an installer request or crashes anything.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from provisiond import metrics
from provisiond.config import SHIPPED_HOOKS
from provisiond.db import Database
from provisiond.worker import queue as work_queue

log = logging.getLogger("provisiond.hooks")

HOOK_EVENTS = ("on-armed", "on-installing", "on-installed", "on-failed")
#: How a run ended: exit status 0, another one, killed after the timeout, not run at all.
OK, FAILED, TIMEOUT, ERROR = "ok", "failed", "timeout", "error"
#: Keep at most this much of a hook's output in the timeline.
OUTPUT_LIMIT = 4000


@dataclass(frozen=True)
class HookCall:
    event: str
    serial: str
    hostname: str
    mac: str
    ip: str | None
    profile: str
    state: str
    reason: str | None = None

    def environment(self) -> dict[str, str]:
        return {
            "PROVISIOND_EVENT": self.event,
            "PROVISIOND_SERIAL": self.serial,
            "PROVISIOND_HOSTNAME": self.hostname,
            "PROVISIOND_MAC": self.mac,
            "PROVISIOND_IP": self.ip or "",
            "PROVISIOND_PROFILE": self.profile,
            "PROVISIOND_STATE": self.state,
            "PROVISIOND_REASON": self.reason or "",
        }


class HookRunner:
    """Queues an event's hooks (in the change's own transaction) and runs
    one when the worker claims it (:mod:`provisiond.worker`)."""

    def __init__(self, hooks_dir: Path, timeout: float, db: Database, attempts: int = 3) -> None:
        self.hooks_dir = hooks_dir
        self.timeout = timeout
        self.db = db
        self.attempts = attempts

    def prepare(self) -> None:
        """Make the ``on-<event>.d/`` folders (and the README that explains
        them) where they are missing, so an operator finds where hooks go."""
        try:
            for event in HOOK_EVENTS:
                (self.hooks_dir / f"{event}.d").mkdir(parents=True, exist_ok=True)
            readme = self.hooks_dir / "README.md"
            if not readme.exists():
                shutil.copyfile(SHIPPED_HOOKS / "README.md", readme)
        except OSError as exc:
            log.warning("hooks_dir %s cannot be prepared (%s): hooks there still run", self.hooks_dir, exc.strerror)

    def executables(self, event: str) -> list[Path]:
        folder = self.hooks_dir / f"{event}.d"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and os.access(p, os.X_OK))

    def enqueue(self, target: Session | Connection, call: HookCall, scripts: list[Path], host_id: int | None,
                now: dt.datetime) -> None:
        """One work item per hook, in the caller's transaction."""
        for script in scripts:
            work_queue.enqueue(target, KIND, {"script": script.name, **dataclasses.asdict(call)}, host_id=host_id,
                               now=now, max_attempts=self.attempts)

    def run(self, payload: dict[str, Any]) -> tuple[str, bool]:
        """Run the hook a work item names: (its outcome in words, ok). Each
        run is counted by how it ended (``provisiond_hook_runs_total``)."""
        call = HookCall(**{k: v for k, v in payload.items() if k != "script"})
        script = self.hooks_dir / f"{call.event}.d" / str(payload["script"])
        outcome, message = self._attempt(call, script)
        metrics.HOOK_RUNS.labels(call.event, script.name, outcome).inc()
        return message, outcome == OK

    def _attempt(self, call: HookCall, script: Path) -> tuple[str, str]:
        """(ok | failed | timeout | error, the outcome in words)."""
        if script.parent.resolve() != (self.hooks_dir / f"{call.event}.d").resolve() or not (
                script.is_file() and os.access(script, os.X_OK)):
            return ERROR, f"hook {script.name} is no longer in {script.parent}: not run"
        try:
            return self._run(call, script)
        except Exception as exc:  # never let a hook take the worker down
            return ERROR, f"hook {script.name} could not run: {exc}"

    def _run(self, call: HookCall, script: Path) -> tuple[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **call.environment()}
        try:
            done = subprocess.run([str(script)], env=env, capture_output=True, text=True, errors="replace",
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, cwd=self.hooks_dir)
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            return TIMEOUT, f"hook {script.name} killed after {self.timeout:g} s{_tail(output)}"
        output = done.stdout + done.stderr
        if done.returncode != 0:
            return FAILED, f"hook {script.name} failed with exit status {done.returncode}{_tail(output)}"
        return OK, f"hook {script.name} ran{_tail(output)}"


#: The work queue's kind for a hook to run.
KIND = "hook"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _tail(output: str) -> str:
    output = output.strip()
    if not output:
        return ""
    if len(output) > OUTPUT_LIMIT:
        output = "…" + output[-OUTPUT_LIMIT:]
    return ": " + output
