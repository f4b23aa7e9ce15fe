"""The job store: the ONE writer of ``jobs`` and ``job_runs`` rows.

A job is one row; each host it is for is one run. A run's life::

    queued ──claim──► running ──result──► succeeded | failed | timed_out
      │                 │ lease ends, no result: delivered again (at least once)
      │                 └ lease ended and the deadline passed: timed_out
      ├ the job's deadline passes first: did_not_run (the agent was offline)
      └ cancelled (by an operator, or its agent was revoked)

A host without an accepted agent when the job is made gets a run that did
not run at once: an offline target never holds a job open, and is reported
apart from failures. A result is recorded once: the agent's idempotency key
makes a repeat harmless (200, not recorded again), and any other result for
a run that has one is refused (409), so a result cannot be replayed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from provisiond import events, models
from provisiond.agent import protocol
from provisiond.db import on_commit
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.jobs import parking
from provisiond.jobs.targets import Target
from provisiond.jobs.types import JobSpec

TERMINAL = ("succeeded", "failed", "timed_out", "did_not_run", "cancelled")
LIVE = ("queued", "running")
#: A run's lease is its timeout and this much more (upload, clock skew).
LEASE_GRACE_SECONDS = 60
#: Runs handed to one poll at most.
CLAIM_LIMIT = 20


def create(session: Session, spec: JobSpec, targets: Sequence[Target], *, by: str, now: dt.datetime,
           deadline_seconds: int, expressions: Sequence[str] = (), purpose: str = "run", step: int | None = None,
           run_payloads: dict[int, dict[str, Any]] | None = None, bell: Any = None) -> models.Job:
    """A job and its runs, in the caller's transaction; the agents' polls
    are woken after the commit."""
    job = models.Job(type=spec.type, payload=spec.payload, digest=spec.digest, summary=spec.summary,
                     targets=list(expressions), purpose=purpose, step=step, timeout_seconds=spec.timeout_seconds,
                     created_by=by, created_at=now, deadline=now + dt.timedelta(seconds=deadline_seconds))
    session.add(job)
    session.flush()
    payloads = run_payloads or {}
    session.add_all([models.JobRun(
        job_id=job.id, host_id=t.host_id, serial=t.serial, agent_id=t.agent_id,
        state="queued" if t.agent_id else "did_not_run", payload=payloads.get(t.host_id), attempts=0,
        finished_at=None if t.agent_id else now, output="", output_truncated=False,
        error=None if t.agent_id else "the host has no accepted agent") for t in targets])
    events.write(session, [events.line(events.Kind.JOB, f"job {job.id} queued by {by}: {spec.summary}"
                                       + ("" if t.agent_id else " (did not run: the host has no accepted agent)"),
                                       host_id=t.host_id, data={"job": job.id, "purpose": purpose}, time=now)
                           for t in targets])
    agent_ids = [t.agent_id for t in targets]
    on_commit(session, lambda: parking.ring(bell, agent_ids))
    return job


def has_work(session: Session, agent_id: int, now: dt.datetime) -> bool:
    """One indexed read: is a run waiting for this agent?"""
    return bool(session.scalar(select(exists().where(_deliverable(agent_id, now)))))


def _deliverable(agent_id: int, now: dt.datetime) -> Any:
    run = models.JobRun
    return and_(run.agent_id == agent_id, or_(
        run.state == "queued", and_(run.state == "running", run.lease_until < now)))


def claim(session: Session, agent_id: int, now: dt.datetime, file_content: Any) -> list[dict[str, Any]]:
    """Lease this agent's waiting runs (and those whose lease ended without
    a result) to it, and return them as the agent gets them.
    ``file_content(name) -> (bytes, sha256)`` reads the file store."""
    run, job = models.JobRun, models.Job
    query = (select(run, job).join(job, job.id == run.job_id)
             .where(_deliverable(agent_id, now), job.cancelled_at.is_(None),
                    or_(run.state == "running", job.deadline > now))
             .order_by(run.id).limit(CLAIM_LIMIT))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=run, skip_locked=True)
    claimed = []
    for one, its_job in session.execute(query):
        lease = now + dt.timedelta(seconds=its_job.timeout_seconds + LEASE_GRACE_SECONDS)
        attempt = one.attempts + 1
        moved = session.execute(update(run).where(run.id == one.id, run.state == one.state,
                                                  run.attempts == one.attempts)
                                .values(state="running", attempts=attempt, delivered_at=now, lease_until=lease)
                                .execution_options(synchronize_session=False))
        if moved.rowcount != 1:  # type: ignore[attr-defined]  # another poll of the same agent took it
            continue
        claimed.append(_delivery(one, its_job, attempt, file_content))
    return claimed


def _delivery(run: models.JobRun, job: models.Job, attempt: int, file_content: Any) -> dict[str, Any]:
    payload = dict(run.payload or job.payload)
    kind = job.type
    if kind == "template":
        kind = "file"  # rendered for this host when the job was made (the run's payload)
    if kind == "file" and "content_b64" not in payload:
        content, sha256 = file_content(payload.pop("file"))
        payload.update(content_b64=base64.b64encode(content).decode(), sha256=sha256)
    payload.pop("file", None)
    payload.pop("variables", None)
    return {"run_id": run.id, "job_id": job.id, "type": kind, "payload": payload,
            "timeout_seconds": job.timeout_seconds,
            "lease_seconds": job.timeout_seconds + LEASE_GRACE_SECONDS, "attempt": attempt}


@dataclass(frozen=True)
class Result:
    key: str
    status: str
    exit_code: int | None
    output: str
    output_truncated: bool
    error: str | None

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Result:
        key = body.get("key")
        if not isinstance(key, str) or not 8 <= len(key) <= 64 or not key.isalnum():
            raise ValidationError("key", "expected the run's idempotency key (8 to 64 letters and digits)")
        status = body.get("status")
        if status not in protocol.RESULT_STATUSES:
            raise ValidationError("status", f"{status!r} is not one of {', '.join(protocol.RESULT_STATUSES)}")
        code = body.get("exit_code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool) or not -255 <= code <= 255):
            raise ValidationError("exit_code", "expected an exit code (-255 to 255) or null")
        output = body.get("output") or ""
        error = body.get("error")
        if not isinstance(output, str) or (error is not None and not isinstance(error, str)):
            raise ValidationError("output", "expected text")
        output = output.replace("\x00", "\\x00")
        truncated = bool(body.get("output_truncated"))
        return cls(key, status, code, output, truncated, events.one_line(error)[:2000] if error else None)

    def capped(self, limit: int) -> Result:
        """The output cut to ``limit`` bytes (of UTF-8), and marked so."""
        encoded = self.output.encode("utf-8", errors="replace")
        if len(encoded) <= limit:
            return self
        return dataclasses.replace(self, output=encoded[:limit].decode("utf-8", errors="ignore"),
                                   output_truncated=True)


@dataclass(frozen=True)
class Recorded:
    recorded: bool
    run: models.JobRun
    job: models.Job


def record_result(session: Session, agent_id: int, run_id: int, result: Result, now: dt.datetime,
                  output_limit: int) -> Recorded:
    """Record an agent's result for its run, once; its output capped at
    ``output_limit`` bytes (a facts job's at the agent's own cap: facts are
    JSON, useless when cut)."""
    run = session.get(models.JobRun, run_id, with_for_update=True)
    if run is None or run.agent_id != agent_id:
        raise NotFound(f"no run {run_id} for this agent")
    job = session.get(models.Job, run.job_id)
    assert job is not None
    if run.result_key is not None:
        if run.result_key == result.key:
            return Recorded(False, run, job)
        raise Conflict(f"run {run_id} has its result already; another one is refused", code="result_recorded")
    if run.state != "running":
        raise Conflict(f"run {run_id} is {run.state}; it takes no result", code="run_finished")
    result = result.capped(max(output_limit, protocol.OUTPUT_LIMIT) if job.type == "facts" else output_limit)
    run.state, run.result_key, run.finished_at = result.status, result.key, now
    run.exit_code, run.output, run.output_truncated, run.error = (result.exit_code, result.output,
                                                                  result.output_truncated, result.error)
    run.lease_until = None
    events.record(session, events.Kind.JOB, f"job {job.id} ({job.summary}) {_outcome(run)}", host_id=run.host_id,
                  data={"job": job.id, "state": run.state, "exit_code": run.exit_code, "purpose": job.purpose},
                  time=now)
    return Recorded(True, run, job)


def _outcome(run: models.JobRun) -> str:
    words = run.state.replace("_", " ")
    if run.exit_code is not None:
        words += f", exit code {run.exit_code}"
    if run.error:
        words += f": {run.error}"
    return words


def expire(session: Session, now: dt.datetime) -> list[models.JobRun]:
    """Runs whose job's deadline passed: not started → did_not_run; started,
    lease over and no result → timed_out. Returns the runs it ended."""
    run, job = models.JobRun, models.Job
    stale = session.execute(select(run, job).join(job, job.id == run.job_id).where(
        job.deadline <= now, or_(run.state == "queued", and_(run.state == "running", run.lease_until < now)))
        .order_by(run.id).limit(1000)).all()
    ended = []
    for one, its_job in stale:
        state, why = (("did_not_run", "its agent did not take it before the job's deadline (offline)")
                      if one.state == "queued" else ("timed_out", "no result came before its lease and the job's "
                                                                  "deadline ended"))
        moved = session.execute(update(run).where(run.id == one.id, run.state == one.state)
                                .values(state=state, error=why, finished_at=now, lease_until=None))
        if moved.rowcount == 1:  # type: ignore[attr-defined]
            one.state, one.error = state, why
            ended.append(one)
            events.record(session, events.Kind.JOB, f"job {its_job.id} ({its_job.summary}) {state.replace('_', ' ')}"
                          f": {why}", host_id=one.host_id, data={"job": its_job.id, "state": state}, time=now)
    return ended


def cancel(session: Session, job_id: int, now: dt.datetime, by: str) -> int:
    job = get(session, job_id)
    if job.cancelled_at is not None:
        raise Conflict(f"job {job_id} was cancelled already")
    job.cancelled_at = now
    return _cancel(session, [models.JobRun.job_id == job_id], now, f"cancelled by {by}")


def cancel_for_agents(session: Session, agent_ids: Sequence[int], now: dt.datetime, why: str) -> int:
    if not agent_ids:
        return 0
    return _cancel(session, [models.JobRun.agent_id.in_(list(agent_ids))], now, why)


def _cancel(session: Session, where: list[Any], now: dt.datetime, why: str) -> int:
    run = models.JobRun
    rows = session.execute(select(run.id, run.host_id, run.job_id).where(*where, run.state.in_(LIVE))).all()
    if rows:
        session.execute(update(run).where(run.id.in_([r.id for r in rows]), run.state.in_(LIVE))
                        .values(state="cancelled", error=why, finished_at=now, lease_until=None))
        events.write(session, [events.line(events.Kind.JOB, f"job {r.job_id} cancelled: {why}", host_id=r.host_id,
                                           data={"job": r.job_id, "state": "cancelled"}, time=now) for r in rows])
    return len(rows)


def get(session: Session, job_id: int) -> models.Job:
    job = session.get(models.Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def counts(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    run = models.JobRun
    result: dict[int, dict[str, int]] = {i: {} for i in job_ids}
    for job_id, state, n in session.execute(select(run.job_id, run.state, func.count()).where(
            run.job_id.in_(list(job_ids))).group_by(run.job_id, run.state)):
        result[job_id][state] = n
    return result


def job_to_dict(job: models.Job, states: dict[str, int]) -> dict[str, Any]:
    live = sum(states.get(s, 0) for s in LIVE)
    return {"id": job.id, "type": job.type, "summary": job.summary, "targets": job.targets, "purpose": job.purpose,
            "digest": job.digest, "created_by": job.created_by, "created_at": job.created_at.isoformat(),
            "deadline": job.deadline.isoformat(), "timeout_seconds": job.timeout_seconds,
            "cancelled": job.cancelled_at is not None, "finished": live == 0, "runs": states}


def run_to_dict(run: models.JobRun, with_output: bool = True) -> dict[str, Any]:
    body = {"run_id": run.id, "job_id": run.job_id, "host": run.serial, "agent_id": run.agent_id, "state": run.state,
            "attempts": run.attempts, "exit_code": run.exit_code, "error": run.error,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}
    if with_output:
        body.update(output=run.output, output_truncated=run.output_truncated)
    return body
