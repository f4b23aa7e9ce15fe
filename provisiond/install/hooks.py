"""Operator hooks: executables in ``hooks/<event>.d/`` run on lifecycle events.

Each runs in the background with a timeout and this environment:

    PROVISIOND_EVENT     on-armed | on-installing | on-installed | on-failed
    PROVISIOND_SERIAL    the host's serial number
    PROVISIOND_HOSTNAME  its host name
    PROVISIOND_MAC       its primary MAC
    PROVISIOND_IP        its address (empty if none)
    PROVISIOND_PROFILE   its install profile
    PROVISIOND_STATE     the state it just entered
    PROVISIOND_REASON    why (for on-failed: hw_mismatch, timeout, installer_error, cancelled)

Output and exit status become events on the host's timeline. A failing or
hanging hook never blocks an installer request or crashes the server.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from provisiond import models
from provisiond.db import Database
from provisiond import events
from provisiond.inventory.fields import serial_key

log = logging.getLogger("provisiond.hooks")

HOOK_EVENTS = ("on-armed", "on-installing", "on-installed", "on-failed")
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
    def __init__(self, hooks_dir: Path, timeout: float, db: Database) -> None:
        self.hooks_dir = hooks_dir
        self.timeout = timeout
        self.db = db
        self._threads: list[threading.Thread] = []

    def executables(self, event: str) -> list[Path]:
        folder = self.hooks_dir / f"{event}.d"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_file() and os.access(p, os.X_OK))

    def fire(self, call: HookCall, scripts: list[Path] | None = None) -> None:
        """Run the event's hooks in a background thread; return at once.
        ``scripts``: the event's executables as the caller just listed them."""
        scripts = self.executables(call.event) if scripts is None else scripts
        if not scripts:
            return
        thread = threading.Thread(target=self._run_all, args=(call, scripts), daemon=True,
                                  name=f"hooks-{call.event}-{call.serial}")
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for running hooks (tests and shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout)

    def _run_all(self, call: HookCall, scripts: list[Path]) -> None:
        for script in scripts:
            try:
                message, ok = self._run(call, script)
            except Exception as exc:  # never let a hook take the server down
                message, ok = f"hook {script.name} could not run: {exc}", False
            self._record(call, script, message, ok)

    def _run(self, call: HookCall, script: Path) -> tuple[str, bool]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **call.environment()}
        try:
            done = subprocess.run([str(script)], env=env, capture_output=True, text=True, errors="replace",
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, cwd=self.hooks_dir)
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            return f"hook {script.name} killed after {self.timeout:g} s{_tail(output)}", False
        output = done.stdout + done.stderr
        if done.returncode != 0:
            return f"hook {script.name} failed with exit status {done.returncode}{_tail(output)}", False
        return f"hook {script.name} ran{_tail(output)}", True

    def _record(self, call: HookCall, script: Path, message: str, ok: bool) -> None:
        (log.info if ok else log.warning)("%s %s: %s", call.event, call.serial, message)
        try:
            with self.db.write() as session:
                host_id = session.scalar(select(models.Host.id).where(models.Host.serial_key == serial_key(call.serial)))
                events.record(session, events.Kind.HOOK, message, host_id=host_id,
                              data={"event": call.event, "hook": script.name, "ok": ok})
        except Exception:
            log.exception("could not record the outcome of hook %s", script.name)


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
