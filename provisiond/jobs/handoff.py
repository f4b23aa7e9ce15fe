"""The hand-off: from an installed host to one in service.

When an install's agent enrolls with its ticket the host goes INSTALLED →
HANDED_OFF and the first of its profile's ``handoff_jobs`` is queued. Each
step that succeeds queues the next; when the last one has succeeded the host
is READY. A step that fails (or times out, or does not run) stops the chain:
the host stays HANDED_OFF with the failure on its timeline, and
``provctl handoff retry SN`` starts the chain again from its first step.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import events, models
from provisiond.errors import Conflict
from provisiond.jobs import files, store
from provisiond.jobs.targets import Target
from provisiond.jobs.types import check
from provisiond.states import HostState


def start(session: Session, svc: Any, host: models.Host, agent_id: int, by: str, now: dt.datetime) -> None:
    """Queue the first hand-off step (or, with none, make the host READY)."""
    _step(session, svc, host, agent_id, 0, by, now)


def _step(session: Session, svc: Any, host: models.Host, agent_id: int, step: int, by: str,
          now: dt.datetime) -> None:
    jobs = svc.profiles.get(host.profile).handoff_jobs
    if step >= len(jobs):
        svc.lifecycle.ready(session, host.id, host.serial, now, f"hand-off done: {len(jobs)} job(s) succeeded"
                            if jobs else "hand-off done (the profile has no hand-off jobs)")
        return
    spec = check(jobs[step], svc.settings.job_timeout_seconds)
    target = Target(host.id, host.serial, agent_id)
    payloads = files.run_payloads(session, svc.composer, spec, [target])
    job = store.create(session, spec, [target], by=by, now=now, deadline_seconds=svc.settings.job_deadline_seconds,
                       expressions=[host.serial], purpose="handoff", step=step, run_payloads=payloads,
                       bell=svc.jobs_bell)
    events.record(session, events.Kind.HANDOFF, f"hand-off step {step + 1} of {len(jobs)}: job {job.id} "
                  f"({spec.summary})", host_id=host.id, data={"job": job.id, "step": step}, time=now)


def after(session: Session, svc: Any, run: models.JobRun, job: models.Job, now: dt.datetime) -> None:
    """A hand-off run ended: the next step, READY, or the failure noted."""
    if job.purpose != "handoff" or run.host_id is None or job.step is None:
        return
    host = session.get(models.Host, run.host_id)
    if host is None or host.state != HostState.HANDED_OFF.value:
        return
    if run.state == "succeeded" and run.agent_id is not None:
        _step(session, svc, host, run.agent_id, job.step + 1, "provisiond (hand-off)", now)
        return
    events.record(session, events.Kind.HANDOFF, f"hand-off stopped: step {job.step + 1} (job {job.id}, "
                  f"{job.summary}) {run.state.replace('_', ' ')}; the host stays handed off "
                  f"(provctl handoff retry {host.serial})", host_id=host.id,
                  data={"job": job.id, "step": job.step, "state": run.state}, time=now)


def retry(session: Session, svc: Any, host: models.Host, by: str, now: dt.datetime) -> None:
    if host.state != HostState.HANDED_OFF.value:
        raise Conflict(f"host {host.serial} is {host.state}; only a handed-off host's hand-off can be retried")
    agent_id = session.scalar(select(models.Agent.id).where(models.Agent.host_id == host.id,
                                                            models.Agent.state == "accepted"))
    if agent_id is None:
        raise Conflict(f"host {host.serial} has no accepted agent")
    live = session.scalar(select(models.JobRun.id).join(models.Job, models.Job.id == models.JobRun.job_id).where(
        models.JobRun.host_id == host.id, models.Job.purpose == "handoff", models.JobRun.state.in_(store.LIVE)))
    if live is not None:
        raise Conflict(f"host {host.serial}'s hand-off is still running (run {live})")
    events.record(session, events.Kind.HANDOFF, f"hand-off retried by {by}", host_id=host.id, time=now)
    start(session, svc, host, agent_id, by, now)
