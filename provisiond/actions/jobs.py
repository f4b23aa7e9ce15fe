"""Job actions: run a job on hosts, follow it, cancel it, run it again;
the file store; a host's hand-off retried. Every job records its principal,
targets, payload digest and outcome in the audit trail."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from provisiond import models
from provisiond.actions.audit import audited, authorize
from provisiond.actions.principal import Principal, Role
from provisiond.errors import ValidationError
from provisiond.inventory import hosts as host_store
from provisiond.jobs import files, handoff, store, targets
from provisiond.jobs.types import check
from provisiond.models import utcnow
from provisiond.services import Services

MAX_LISTED = 500


def submit(svc: Services, who: Principal, body: Any) -> dict[str, Any]:
    """``{"type", "payload", "timeout_seconds", "targets": [...]}``: a job
    for every host the targets name."""
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object")
    expressions = body.get("targets")
    with audited(svc, who, f"jobs.{body.get('type', 'run')}", Role.OPERATOR,
                 expressions if isinstance(expressions, list) else []) as act:
        spec = check({k: v for k, v in body.items() if k != "targets"}, svc.settings.job_timeout_seconds)
        now = utcnow()
        with svc.db.write() as session:
            chosen = targets.resolve(session, expressions)  # type: ignore[arg-type]
            payloads = files.run_payloads(session, svc.composer, spec, chosen)
            job = store.create(session, spec, chosen, by=str(who), now=now,
                               deadline_seconds=svc.settings.job_deadline_seconds, expressions=expressions or [],
                               run_payloads=payloads, bell=svc.jobs_bell)
            act.done(session, f"job {job.id}: {spec.summary} on {len(chosen)} host(s)",
                     targets=[t.serial for t in chosen], data={"job": job.id, "digest": spec.digest})
            return store.job_to_dict(job, store.counts(session, [job.id])[job.id])


def listing(svc: Services, who: Principal, limit: int = 50) -> list[dict[str, Any]]:
    authorize(who, Role.VIEWER, "jobs.list")
    with svc.db.read() as session:
        jobs = session.scalars(select(models.Job).order_by(models.Job.id.desc()).limit(min(limit, MAX_LISTED))).all()
        states = store.counts(session, [job.id for job in jobs])
        return [store.job_to_dict(job, states[job.id]) for job in jobs]


def show(svc: Services, who: Principal, job_id: int, with_output: bool = False,
         state: str | None = None) -> dict[str, Any]:
    authorize(who, Role.VIEWER, "jobs.show")
    with svc.db.read() as session:
        job = store.get(session, job_id)
        query = select(models.JobRun).where(models.JobRun.job_id == job_id).order_by(models.JobRun.serial)
        if state:
            query = query.where(models.JobRun.state == state)
        runs = session.scalars(query).all()
        body = store.job_to_dict(job, store.counts(session, [job_id])[job_id])
        body["hosts"] = [store.run_to_dict(run, with_output) for run in runs]
        return body


def cancel(svc: Services, who: Principal, job_id: int) -> dict[str, Any]:
    with audited(svc, who, "jobs.cancel", Role.OPERATOR, [f"job {job_id}"]) as act:
        with svc.db.write() as session:
            cancelled = store.cancel(session, job_id, utcnow(), str(who))
            act.done(session, f"job {job_id} cancelled ({cancelled} run(s) stopped)")
            return {"job": job_id, "cancelled_runs": cancelled}


def rerun(svc: Services, who: Principal, job_id: int, failed_only: bool = False) -> dict[str, Any]:
    """The same job again, on all its hosts or (``failed_only``) those whose
    run did not succeed."""
    with svc.db.read() as session:
        job = store.get(session, job_id)
        query = select(models.JobRun.serial).where(models.JobRun.job_id == job_id)
        if failed_only:
            query = query.where(models.JobRun.state != "succeeded")
        serials = sorted(session.scalars(query).all())
        body = {"type": job.type, "payload": job.payload, "timeout_seconds": job.timeout_seconds}
    if not serials:
        raise ValidationError("failed", f"job {job_id} has no host to run again (every run succeeded)")
    return submit(svc, who, {**body, "targets": [f"serial:{serial}" for serial in serials]})


def handoff_retry(svc: Services, who: Principal, serial: str) -> None:
    with audited(svc, who, "hosts.handoff_retry", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:
            host = host_store.get_host(session, serial)
            handoff.retry(session, svc, host, str(who), utcnow())
            act.done(session, f"hand-off of {host.serial} started again", targets=[host.serial])


def expire(svc: Services) -> int:
    """The worker's sweep: runs past their job's deadline end (did not run,
    timed out); a hand-off step that ended so is noted."""
    now = utcnow()
    with svc.db.write() as session:
        ended = store.expire(session, now)
        for run in ended:
            handoff.after(session, svc, run, store.get(session, run.job_id), now)
        return len(ended)


# ---------------------------------------------------------------- the file store


def put_file(svc: Services, who: Principal, name: str, content: bytes, replace: bool = False) -> dict[str, Any]:
    with audited(svc, who, "files.put", Role.OPERATOR, [name]) as act:
        with svc.db.write() as session:
            row = files.put(session, name, content, str(who), utcnow(), replace)
            act.done(session, f"file {name} stored ({row.size} bytes, sha256 {row.sha256})")
            return {"name": row.name, "sha256": row.sha256, "size": row.size}


def list_files(svc: Services, who: Principal) -> list[dict[str, Any]]:
    authorize(who, Role.VIEWER, "files.list")
    with svc.db.read() as session:
        return files.listing(session)


def remove_file(svc: Services, who: Principal, name: str) -> None:
    with audited(svc, who, "files.remove", Role.OPERATOR, [name]) as act:
        with svc.db.write() as session:
            files.remove(session, name)
            act.done(session, f"file {name} removed")
