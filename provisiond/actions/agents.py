"""Agent actions: enrollment, the operator's decisions (accept, reject,
delete), and what an agent does once it acts for its host (poll for runs,
upload results).

Agents are principals of their own (``agent 12``): they authenticate with
their credential, never with a role, and may only fetch their own runs and
post their own results. Operators need the operator role to decide on
agents and run jobs.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm.attributes import set_committed_value

from provisiond import events, models
from provisiond.actions.audit import audited, authorize
from provisiond.actions.principal import SYSTEM, Principal, Role
from provisiond.agent import protocol
from provisiond.agents import facts, registry, tickets
from provisiond.errors import Forbidden, NotFound, Unauthorized, ValidationError
from provisiond.inventory import hosts as host_store
from provisiond.jobs import files, handoff, store
from provisiond.jobs.types import check
from provisiond.models import utcnow
from provisiond.services import Services

#: An accepted agent heard from within this long is online.
ONLINE_SECONDS = 90
#: A pending agent is told to come back after this long.
PENDING_POLL_SECONDS = 15
_REFUSED = {"rejected": "agent_rejected", "denied": "agent_denied", "revoked": "agent_revoked"}


@dataclass(frozen=True)
class Enrolled:
    status: int  # 200 (enrolled before), 201 (accepted by ticket), 202 (pending), 403 (denied)
    body: dict[str, Any]


def _newcomer(address: str | None) -> Principal:
    return Principal("agent", f"new from {address or 'unknown'}", Role.VIEWER)


def enroll(svc: Services, body: Any, address: str | None) -> Enrolled:
    """An agent introduces itself (see :mod:`provisiond.agent.protocol`)."""
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object")
    credential = registry.check_credential(body.get("credential"))
    identity = registry.Identity.from_body(body)
    ticket = body.get("ticket")
    with svc.admission.admit("an enrollment"):
        return _enroll(svc, credential, identity, ticket, address)


def _enroll(svc: Services, credential: str, identity: registry.Identity, ticket: Any,
            address: str | None) -> Enrolled:
    now = utcnow()
    with audited(svc, _newcomer(address), "agents.enroll", Role.VIEWER, [identity.serial] if identity.serial else []
                 ) as act:
        with svc.db.write() as session:
            known = registry.find(session, credential)
            if known is not None:
                act.done(session, f"{registry.describe(known)} enrolled again ({known.state})")
                return _answer(session, known, 200)
            if ticket:
                agent = _enroll_with_ticket(svc, session, credential, identity, ticket, now, address)
                act.done(session, f"{registry.describe(agent)} accepted by its install's ticket",
                         targets=[_serial(session, agent.host_id) or ""])
                return _answer(session, agent, 201)
            agent = registry.create_unaccepted(session, credential, identity, now, address)
            act.done(session, f"{registry.describe(agent)} registered: {agent.state}")
            return _answer(session, agent, 403 if agent.state == "denied" else 202)


def _enroll_with_ticket(svc: Services, session: Any, credential: str, identity: registry.Identity, ticket: Any,
                        now: dt.datetime, address: str | None) -> models.Agent:
    window = dt.timedelta(seconds=svc.settings.enrollment_window_seconds)
    redeemed = tickets.redeem(session, ticket, now, window)
    host = session.get(models.Host, redeemed.host_id)
    agent = registry.create_accepted(session, credential, identity, host.id, redeemed.install_id, now, address,
                                     "enrollment ticket")
    svc.lifecycle.handed_off(session, host.id, host.serial, redeemed.install_id, now,
                             f"{registry.describe(agent)} enrolled with the install's ticket from "
                             f"{address or 'an unknown address'}: the host is in its agent's hands")
    set_committed_value(host, "state", "handed_off")
    handoff.start(session, svc, host, agent.id, "provisiond (hand-off)", now)
    return agent


def _serial(session: Any, host_id: int | None) -> str | None:
    return session.scalar(select(models.Host.serial).where(models.Host.id == host_id)) if host_id else None


def _answer(session: Any, agent: models.Agent, status: int) -> Enrolled:
    body: dict[str, Any] = {"agent_id": agent.id, "state": agent.state, "host": _serial(session, agent.host_id)
                            if agent.state == "accepted" else None}
    if agent.state == "denied":
        body.update(error="agent_denied", message="this identity belongs to an accepted agent with another "
                                                  "credential; an operator must decide (provctl agents list)")
    if agent.state in ("rejected", "revoked"):
        status = 403
        body.update(error=_REFUSED[agent.state], message=f"this agent is {agent.state}")
    if agent.state == "pending":
        body["poll_after"] = PENDING_POLL_SECONDS
    return Enrolled(status, body)


# ---------------------------------------------------------------- the agent's own calls


def authenticate(svc: Services, header: str) -> registry.AgentRef:
    """The agent a request's ``Authorization: Bearer <credential>`` is; 401
    for none or an unknown one, 403 for a pending, rejected, denied or
    revoked one (with a code the agent acts on)."""
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential.startswith(protocol.CREDENTIAL_PREFIX):
        raise Unauthorized("agent calls need 'Authorization: Bearer <the agent's credential>'")
    with svc.admission.admit("a call"), svc.db.read() as session:
        agent = registry.lookup(session, credential)
    if agent is None:
        raise Unauthorized("unknown agent credential: enroll first")
    if agent.state == "pending":
        raise Forbidden("this agent waits for an operator's acceptance", code="agent_pending",
                        poll_after=PENDING_POLL_SECONDS)
    if agent.state != "accepted":
        raise Forbidden(f"this agent is {agent.state}", code=_REFUSED.get(agent.state, "agent_refused"))
    return agent


def poll(svc: Services, agent: registry.AgentRef, wait: Any, address: str | None) -> dict[str, Any]:
    """The agent's runs, at once if some wait, else when one arrives, or
    none after ``wait`` seconds. Each poll is a heartbeat."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= protocol.POLL_MAX_WAIT:
        raise ValidationError("wait", f"expected seconds from 0 to {protocol.POLL_MAX_WAIT}")
    until = time.monotonic() + float(wait)
    touched = False
    while True:
        now = utcnow()
        runs = _claim(svc, agent, now, address, touch=not touched)
        touched = True
        left = until - time.monotonic()
        if runs or left <= 0:
            return {"runs": runs, "server_time": utcnow().isoformat(), "poll_after": 0}
        svc.parking.wait(agent.id, min(left, _recheck()))


def _recheck() -> float:
    from provisiond.jobs.parking import RECHECK_SECONDS

    return RECHECK_SECONDS


def _claim(svc: Services, agent: registry.AgentRef, now: dt.datetime, address: str | None,
           touch: bool) -> list[dict[str, Any]]:
    with svc.admission.admit("a poll"):
        return _claim_admitted(svc, agent, now, address, touch)


def _claim_admitted(svc: Services, agent: registry.AgentRef, now: dt.datetime, address: str | None,
                    touch: bool) -> list[dict[str, Any]]:
    with svc.db.read() as session:
        waiting = store.has_work(session, agent.id, now)
    due = touch and (agent.last_seen_at is None
                     or (now - agent.last_seen_at).total_seconds() >= registry.TOUCH_SECONDS)
    if not waiting and not due:
        return []
    with svc.db.write() as session:
        if due:
            registry.touch(session, agent, now, address)
        return store.claim(session, agent.id, now, files.content_reader(session)) if waiting else []


def result(svc: Services, agent: registry.AgentRef, run_id: int, body: Any) -> dict[str, Any]:
    """An agent's result for one of its runs, recorded once."""
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object")
    checked = store.Result.from_body(body)
    now = utcnow()
    with svc.admission.admit("a result"), svc.db.write() as session:
        recorded = store.record_result(session, agent.id, run_id, checked, now, svc.settings.job_output_limit_bytes)
        if recorded.recorded:
            _after_result(svc, session, recorded, agent, now)
    return {"recorded": recorded.recorded}


def _after_result(svc: Services, session: Any, recorded: store.Recorded, agent: registry.AgentRef,
                  now: dt.datetime) -> None:
    import json

    run, job = recorded.run, recorded.job
    if job.type == "facts" and run.state == "succeeded":
        try:
            reported = json.loads(run.output)
        except ValueError:
            reported = None
        if isinstance(reported, dict):
            _record_facts(session, agent, run.host_id, reported, now)
    handoff.after(session, svc, run, job, now)


def _record_facts(session: Any, agent: registry.AgentRef, host_id: int | None, reported: dict[str, Any],
                  now: dt.datetime) -> None:
    """Store the facts; the first report and any change are on the timeline."""
    before = registry.record_facts(session, agent.id, reported, now)
    said = facts.changes(before, reported) if before else [facts.first(reported)]
    if said:
        message = ("facts changed: " if before else "") + "; ".join(said)
        events.write(session, [events.line(events.Kind.FACTS, message[:1000], host_id=host_id,
                                           data={"agent": agent.id}, time=now)])


def refresh_facts(svc: Services) -> int:
    """The worker's sweep: one facts job for the accepted agents whose facts
    are older than ``facts_interval_seconds`` (0: never refreshed). Returns
    how many hosts it asked."""
    interval = svc.settings.facts_interval_seconds
    if not interval:
        return 0
    now = utcnow()
    with svc.db.read() as session:
        if not facts.due(session, now, interval, ONLINE_SECONDS):
            return 0
    with audited(svc, SYSTEM, "jobs.facts", Role.OPERATOR, []) as act:
        with svc.db.write() as session:
            facts.lock_sweep(session)  # another instance's worker may sweep at the same moment
            chosen = facts.due(session, now, interval, ONLINE_SECONDS)  # again, in the transaction that queues them
            if not chosen:
                act.done(session, "no host due a facts refresh")
                return 0
            spec = check({"type": "facts"}, svc.settings.job_timeout_seconds)
            job = store.create(session, spec, chosen, by="provisiond (facts refresh)", now=now,
                               deadline_seconds=svc.settings.job_deadline_seconds, purpose="facts",
                               bell=svc.jobs_bell)
            act.done(session, f"job {job.id}: facts refresh on {len(chosen)} host(s)",
                     targets=[t.serial for t in chosen], data={"job": job.id})
            return len(chosen)


# ---------------------------------------------------------------- the operator's decisions


def listing(svc: Services, who: Principal, state: str | None = None) -> list[dict[str, Any]]:
    authorize(who, Role.VIEWER, "agents.list")
    if state is not None and state not in registry.STATES:
        raise ValidationError("state", f"{state!r} is not one of {', '.join(registry.STATES)}")
    now = utcnow()
    with svc.db.read() as session:
        query = select(models.Agent, models.Host.serial).outerjoin(models.Host, models.Host.id == models.Agent.host_id)
        if state:
            query = query.where(models.Agent.state == state)
        return [registry.to_dict(agent, serial, now, ONLINE_SECONDS)
                for agent, serial in session.execute(query.order_by(models.Agent.id))]


def accept(svc: Services, who: Principal, agent_id: int, host: str | None = None) -> dict[str, Any]:
    now = utcnow()
    with audited(svc, who, "agents.accept", Role.OPERATOR, [f"agent {agent_id}"]) as act:
        with svc.db.write() as session:
            agent = registry.get(session, agent_id)
            host_row = host_store.get_host(session, host) if host else None
            registry.accept(session, agent, host_row.id if host_row else None, now, str(who))
            serial = _serial(session, agent.host_id)
            row = session.get(models.Host, agent.host_id)
            if row is not None and row.state == "installed":
                svc.lifecycle.handed_off(session, row.id, row.serial, None, now,
                                         f"{registry.describe(agent)} accepted by {who}: the host is in its "
                                         "agent's hands")
                set_committed_value(row, "state", "handed_off")
                handoff.start(session, svc, row, agent.id, str(who), now)
            act.done(session, f"{registry.describe(agent)} accepted for host {serial}", targets=[serial or ""])
            return registry.to_dict(agent, serial, now, ONLINE_SECONDS)


def reject(svc: Services, who: Principal, agent_id: int) -> None:
    with audited(svc, who, "agents.reject", Role.OPERATOR, [f"agent {agent_id}"]) as act:
        with svc.db.write() as session:
            agent = registry.get(session, agent_id)
            registry.reject(session, agent, utcnow(), str(who))
            act.done(session, f"{registry.describe(agent)} rejected")


def delete(svc: Services, who: Principal, agent_id: int) -> None:
    with audited(svc, who, "agents.delete", Role.OPERATOR, [f"agent {agent_id}"]) as act:
        with svc.db.write() as session:
            agent = registry.get(session, agent_id)
            registry.delete(session, agent, utcnow(), str(who))
            act.done(session, f"{registry.describe(agent)} deleted")


def host_facts(svc: Services, who: Principal, serial: str) -> dict[str, Any]:
    authorize(who, Role.VIEWER, "hosts.facts")
    with svc.db.read() as session:
        host = host_store.get_host(session, serial)
        agent = session.scalar(select(models.Agent).where(models.Agent.host_id == host.id,
                                                          models.Agent.state == "accepted"))
        if agent is None:
            raise NotFound(f"host {host.serial} has no accepted agent")
        return {"host": host.serial, "agent_id": agent.id,
                "facts_at": agent.facts_at.isoformat() if agent.facts_at else None, "facts": agent.facts}
