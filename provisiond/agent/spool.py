"""The agent's record of its runs: results are delivered at least once, and
no run is ever run twice.

``state_dir/runs/<run_id>.json``, one file per run, each write atomic:

* ``started`` (with the run's idempotency key, a uuid4 hex) is on disk
  BEFORE the job runs;
* ``finished``, with its result, when it ends; the result is uploaded with
  that key until provisiond acknowledges it;
* ``acknowledged`` once provisiond recorded it (or said it never will: a
  409/404); deleted ACKNOWLEDGED_DAYS later.

A run provisiond delivers again (its lease ended before the result came)
is looked up here first: one with a result gets the same result again,
same key; one that is only ``started`` (the agent stopped while it ran) is
not run again, it is answered ``failed``: INTERRUPTED. Running it again
could do twice what must be done once (a payment, a disk wipe, an
``rm``); whether to retry is the operator's decision.

Standard library only; runs on Python 3.9.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

from provisiond.agent import runners
from provisiond.agent.atomic import write_atomic

log = logging.getLogger(__name__)

INTERRUPTED = "the agent stopped while this run was under way"
ACKNOWLEDGED_DAYS = 7
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_STATES = ("started", "finished", "acknowledged")


class SpoolError(Exception):
    """The spool cannot be used (another agent holds it, or a bad run id)."""


def run_file_name(run_id: Any) -> str:
    """A run id as a file name; only ids that are safe as one are accepted
    (provisiond's are integers)."""
    if isinstance(run_id, bool) or not isinstance(run_id, (int, str)) or not _RUN_ID.fullmatch(str(run_id)):
        raise SpoolError(f"run id {run_id!r} is not an id (letters, digits, '_' and '-')")
    return f"{run_id}.json"


class Record(NamedTuple):
    """What the spool knows of one run."""

    run_id: Any
    key: str
    state: str
    result: Optional[Dict[str, Any]]
    data: Dict[str, Any]

    def body(self) -> Dict[str, Any]:
        """The ``POST RESULT`` body: the result and its idempotency key."""
        assert self.result is not None, "only a finished run has a result to send"
        return {**self.result, "key": self.key}


class Spool:
    """The run records in ``state_dir/runs``."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "runs"
        self._lock_fd: Optional[int] = None

    # ------------------------------------------------------------ one agent per spool

    def lock(self) -> None:
        """Hold ``state_dir/agent.lock`` while this process lives: two agents
        on one spool could each run the same run."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(str(self.directory.parent / "agent.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolError(f"another provisiond-agent is using {self.directory.parent}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ records

    def get(self, run_id: Any) -> Optional[Record]:
        path = self.directory / run_file_name(run_id)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or data.get("state") not in _STATES or not isinstance(data.get("key"), str):
                raise ValueError("not a run record")
        except ValueError as exc:
            # Unreadable: whether the run ran is unknown, so it is taken as
            # begun (never run again) and answered as interrupted.
            log.error("run record %s is unreadable (%s): the run counts as interrupted", path, exc)
            data = {"run_id": run_id, "key": uuid.uuid4().hex, "state": "started", "result": None}
        return _record(data)

    def prepare(self, run: Mapping[str, Any]) -> tuple[Record, bool]:
        """The record of a delivered run and whether to run it now: only a
        run never begun here is run; one begun but not finished is
        answered INTERRUPTED; one finished keeps its result."""
        run_id = run.get("run_id")
        record = self.get(run_id)
        if record is None:
            return self.begin(run), True
        if record.state == "started":
            return self.interrupted(record), False
        return record, False

    def begin(self, run: Mapping[str, Any]) -> Record:
        """On disk before the job runs: from here on it is never run again."""
        data = {"run_id": run.get("run_id"), "job_id": run.get("job_id"), "type": run.get("type"),
                "attempt": run.get("attempt"), "key": uuid.uuid4().hex, "state": "started",
                "started_at": runners.now_iso(), "result": None}
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write(data)
        return _record(data)

    def finish(self, record: Record, result: Mapping[str, Any]) -> Record:
        """Keep a run's result (to upload, and to answer a re-delivery)."""
        data = {**record.data, "state": "finished", "result": dict(result)}
        self._write(data)
        return _record(data)

    def interrupted(self, record: Record) -> Record:
        """The result of a run the agent began and never finished."""
        started = record.data.get("started_at")
        log.warning("run %s began before the agent stopped and never finished: it is not run again, it is "
                    "reported failed (%s)", record.run_id, INTERRUPTED)
        return self.finish(record, runners.failed(INTERRUPTED, started if isinstance(started, str) else None))

    def acknowledge(self, record: Record, how: str) -> Record:
        """provisiond has the result (``how``: recorded, recorded already, or
        refused with why): it is not sent again."""
        data = {**record.data, "state": "acknowledged", "acknowledged_at": runners.now_iso(),
                "acknowledgement": how}
        self._write(data)
        return _record(data)

    def pending(self) -> List[Record]:
        """Finished runs whose results provisiond has not acknowledged, oldest first."""
        return [record for record in self._all() if record.state == "finished"]

    # ------------------------------------------------------------ at startup

    def recover(self) -> int:
        """Runs begun by an agent that stopped before they finished get their
        INTERRUPTED result (sent with the others not yet acknowledged).
        Only at startup, under :meth:`lock`: nothing runs then."""
        count = 0
        for record in self._all():
            if record.state == "started":
                self.interrupted(record)
                count += 1
        return count

    def cleanup(self, now: Optional[float] = None, days: int = ACKNOWLEDGED_DAYS) -> int:
        """Delete acknowledged records older than ``days`` (provisiond does
        not deliver a run again that long after its result), and temporary
        files a crash left behind."""
        if not self.directory.is_dir():
            return 0
        now = time.time() if now is None else now
        removed = 0
        for path in self.directory.iterdir():
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink()
                continue
            if not path.name.endswith(".json"):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                acknowledged = data.get("state") == "acknowledged"
                when = _timestamp(data.get("acknowledged_at")) or path.stat().st_mtime
            except (OSError, ValueError, AttributeError):
                continue
            if acknowledged and now - when > days * 86400:
                path.unlink()
                removed += 1
        if removed:
            log.info("deleted %d run record(s) acknowledged more than %d days ago", removed, days)
        return removed

    # ------------------------------------------------------------ files

    def _write(self, data: Dict[str, Any]) -> None:
        path = self.directory / run_file_name(data["run_id"])
        write_atomic(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"), mode=0o600)

    def _all(self) -> List[Record]:
        if not self.directory.is_dir():
            return []
        records = []
        for path in sorted(self.directory.glob("*.json"), key=_age):
            record = self.get(path.name[:-len(".json")]) if _RUN_ID.fullmatch(path.name[:-5]) else None
            if record is not None:
                records.append(record)
        return records


def _record(data: Dict[str, Any]) -> Record:
    result = data.get("result")
    return Record(run_id=data.get("run_id"), key=str(data["key"]), state=str(data["state"]),
                  result=result if isinstance(result, dict) else None, data=data)


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _timestamp(value: Any) -> Optional[float]:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None
