"""The agent registry: the ONE writer of ``agents`` rows.

An agent proves who it is with its credential (a secret it made itself and
keeps 0600; the server keeps its SHA-256). How it gets to act for a host:

- **with a ticket** (an install's new system): accepted at once, bound to the
  ticket's host; the host goes INSTALLED → HANDED_OFF and its profile's
  hand-off jobs are queued (:mod:`provisiond.jobs.handoff`);
- **without** (a host installed any other way): ``pending`` until an operator
  accepts (``provctl agents accept``) or rejects it, as ``salt-key`` does.
  One whose identity (machine id, or the serial number of a host) belongs to
  an accepted agent with another credential is recorded ``denied`` and
  shown, never accepted by itself (a rebuilt host, or an impostor).

Arming a host for a reinstall revokes its agents (:func:`revoke_for_hosts`),
so the old system's agent can never act for the new one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from provisiond import events, models
from provisiond.agent.protocol import CREDENTIAL_PREFIX
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.inventory import fields

STATES = ("pending", "accepted", "rejected", "denied", "revoked")
_CREDENTIAL = re.compile(re.escape(CREDENTIAL_PREFIX) + r"[A-Za-z0-9_-]{40,100}")
_MACHINE_ID = re.compile(r"[0-9A-Za-z-]{0,64}")
#: An agent's last-seen time is written at most this often (every poll is a heartbeat).
TOUCH_SECONDS = 15


def hash_credential(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


def check_credential(value: Any) -> str:
    if not isinstance(value, str) or not _CREDENTIAL.fullmatch(value):
        raise ValidationError("credential", f"expected {CREDENTIAL_PREFIX} and 40 to 100 url-safe characters")
    return value


@dataclass(frozen=True)
class Identity:
    """What an agent says of itself when it enrolls (checked here)."""

    hostname: str
    machine_id: str
    serial: str
    version: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Identity:
        machine_id = str(body.get("machine_id") or "")
        if not _MACHINE_ID.fullmatch(machine_id):
            raise ValidationError("machine_id", "expected up to 64 letters, digits or '-'")
        # The firmware's serial number as the agent read it: any one line
        # ("To Be Filled By O.E.M." included); it names a host only if it is one's.
        return cls(hostname=fields.text(body.get("hostname"), "hostname", 253) or "", machine_id=machine_id.lower(),
                   serial=fields.text(body.get("serial"), "serial", 64) or "",
                   version=fields.text(body.get("version"), "version", 32) or "")


@dataclass(frozen=True)
class AgentRef:
    """An authenticated agent, as the agent endpoints need it."""

    id: int
    state: str
    host_id: int | None
    last_seen_at: dt.datetime | None


def describe(agent: models.Agent) -> str:
    return f"agent {agent.id} ({agent.hostname or 'no hostname'}, machine {agent.machine_id[:12] or '?'})"


def find(session: Session, credential: str) -> models.Agent | None:
    return session.scalar(select(models.Agent).where(models.Agent.credential_hash == hash_credential(credential)))


def lookup(session: Session, credential: str) -> AgentRef | None:
    """The agent a credential is (one indexed read), or None."""
    row = session.execute(select(models.Agent.id, models.Agent.state, models.Agent.host_id,
                                 models.Agent.last_seen_at)
                          .where(models.Agent.credential_hash == hash_credential(credential))).first()
    return AgentRef(row.id, row.state, row.host_id, row.last_seen_at) if row else None


def create_accepted(session: Session, credential: str, identity: Identity, host_id: int, install_id: int | None,
                    now: dt.datetime, address: str | None, by: str) -> models.Agent:
    """A new agent acting for ``host_id`` (its ticket or an operator says so);
    any other accepted agent of the host is revoked."""
    revoke_for_hosts(session, [host_id], now, "a new agent enrolled for the host")
    agent = models.Agent(host_id=host_id, state="accepted", credential_hash=hash_credential(credential),
                         hostname=identity.hostname, machine_id=identity.machine_id, serial=identity.serial,
                         version=identity.version, address=address, install_id=install_id, created_at=now,
                         decided_at=now, decided_by=by, last_seen_at=now, facts={})
    session.add(agent)
    session.flush()
    return agent


def create_unaccepted(session: Session, credential: str, identity: Identity, now: dt.datetime,
                      address: str | None) -> models.Agent:
    """A new agent without a ticket: ``denied`` if it claims an accepted
    agent's identity, else ``pending`` (tied to the data source's host of
    its serial number, if there is one, for the operator to confirm)."""
    clash = _accepted_with_identity(session, identity)
    host_id = _host_of_serial(session, identity.serial)
    agent = models.Agent(host_id=host_id, state="denied" if clash else "pending",
                         credential_hash=hash_credential(credential), hostname=identity.hostname,
                         machine_id=identity.machine_id, serial=identity.serial, version=identity.version,
                         address=address, created_at=now, last_seen_at=now, facts={})
    session.add(agent)
    session.flush()
    if clash is not None:
        agent.decided_at, agent.decided_by = now, "provisiond"
        events.record(session, events.Kind.AGENT, f"{describe(agent)} denied: it claims the identity of accepted "
                      f"{describe(clash)} with another credential (a rebuilt host?)", host_id=clash.host_id,
                      data={"agent": agent.id, "clashes_with": clash.id}, time=now)
    elif host_id is not None:
        events.record(session, events.Kind.AGENT, f"{describe(agent)} registered, pending an operator's "
                      "acceptance", host_id=host_id, data={"agent": agent.id}, time=now)
    return agent


def _accepted_with_identity(session: Session, identity: Identity) -> models.Agent | None:
    claims = []
    if identity.machine_id:
        claims.append(models.Agent.machine_id == identity.machine_id)
    host_id = _host_of_serial(session, identity.serial)
    if host_id is not None:
        claims.append(models.Agent.host_id == host_id)
    if not claims:
        return None
    return session.scalar(select(models.Agent).where(models.Agent.state == "accepted", or_(*claims))
                          .order_by(models.Agent.id).limit(1))


def _host_of_serial(session: Session, serial: str) -> int | None:
    if not serial:
        return None
    return session.scalar(select(models.Host.id).where(models.Host.serial_key == fields.serial_key(serial)))


def get(session: Session, agent_id: int) -> models.Agent:
    agent = session.get(models.Agent, agent_id, with_for_update=True)
    if agent is None:
        raise NotFound(f"no agent {agent_id}")
    return agent


def accept(session: Session, agent: models.Agent, host_id: int | None, now: dt.datetime, by: str) -> models.Agent:
    """An operator accepts a pending (or rejected, or denied) agent for a host."""
    if agent.state == "accepted":
        raise Conflict(f"{describe(agent)} is accepted already")
    if agent.state == "revoked":
        raise Conflict(f"{describe(agent)} was revoked; a revoked credential is never accepted again")
    host_id = host_id if host_id is not None else agent.host_id
    if host_id is None:
        raise ValidationError("host", f"{describe(agent)} reported serial number {agent.serial or '(none)'}, which "
                                      "is no host's: name the host it acts for")
    other = session.scalar(select(models.Agent).where(models.Agent.host_id == host_id,
                                                      models.Agent.state == "accepted", models.Agent.id != agent.id))
    if other is not None:
        raise Conflict(f"host already has accepted {describe(other)}; delete it first (provctl agents delete "
                       f"{other.id})")
    agent.state, agent.host_id, agent.decided_at, agent.decided_by = "accepted", host_id, now, by
    events.record(session, events.Kind.AGENT, f"{describe(agent)} accepted by {by}", host_id=host_id,
                  data={"agent": agent.id}, time=now)
    return agent


def reject(session: Session, agent: models.Agent, now: dt.datetime, by: str) -> None:
    if agent.state == "revoked":
        raise Conflict(f"{describe(agent)} was revoked already")
    agent.state, agent.decided_at, agent.decided_by = "rejected", now, by
    _cancel_runs(session, [agent.id], now, f"its agent was rejected by {by}")
    events.record(session, events.Kind.AGENT, f"{describe(agent)} rejected by {by}", host_id=agent.host_id,
                  data={"agent": agent.id}, time=now)


def delete(session: Session, agent: models.Agent, now: dt.datetime, by: str) -> None:
    """Forget an agent: its credential is refused from now on (it may
    register again, as pending)."""
    _cancel_runs(session, [agent.id], now, f"its agent was deleted by {by}")
    events.record(session, events.Kind.AGENT, f"{describe(agent)} deleted by {by}", host_id=agent.host_id,
                  data={"agent": agent.id}, time=now)
    session.delete(agent)


def revoke_for_hosts(session: Session, host_ids: Iterable[int], now: dt.datetime, why: str) -> list[int]:
    """Revoke every live agent of these hosts (arming a reinstall, a new
    agent enrolling): their credentials are refused from now on and their
    unfinished runs cancelled."""
    ids = list(host_ids)
    if not ids:
        return []
    revoked = _revoke(session, ids, now)
    if revoked:
        _cancel_runs(session, [agent_id for agent_id, _ in revoked], now, f"its agent was revoked: {why}")
        events.write(session, [events.line(events.Kind.AGENT, f"agent {agent_id} revoked: {why}", host_id=host_id,
                                           data={"agent": agent_id}, time=now) for agent_id, host_id in revoked])
    return [agent_id for agent_id, _ in revoked]


def _revoke(session: Session, host_ids: list[int], now: dt.datetime) -> list[tuple[int, int]]:
    rows = session.execute(select(models.Agent.id, models.Agent.host_id).where(
        models.Agent.host_id.in_(host_ids), models.Agent.state.in_(("accepted", "pending")))).all()
    if rows:
        session.execute(update(models.Agent).where(models.Agent.id.in_([r.id for r in rows]))
                        .values(state="revoked", decided_at=now, decided_by="provisiond"))
    return [(r.id, r.host_id) for r in rows]


def _cancel_runs(session: Session, agent_ids: list[int], now: dt.datetime, why: str) -> None:
    from provisiond.jobs import store

    store.cancel_for_agents(session, agent_ids, now, why)


def touch(session: Session, agent: AgentRef, now: dt.datetime, address: str | None) -> None:
    """A heartbeat: the agent's last-seen time, written at most every
    :data:`TOUCH_SECONDS`."""
    if agent.last_seen_at is None or (now - agent.last_seen_at).total_seconds() >= TOUCH_SECONDS:
        session.execute(update(models.Agent).where(models.Agent.id == agent.id)
                        .values(last_seen_at=now, address=address))


def record_facts(session: Session, agent_id: int, facts: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The agent's new facts; returns the ones they replace ({} for none)."""
    row = session.get(models.Agent, agent_id)
    if row is None:
        raise NotFound(f"no agent {agent_id}")
    before = dict(row.facts or {})
    row.facts, row.facts_at = facts, now
    return before


def to_dict(agent: models.Agent, serial: str | None, now: dt.datetime, online_seconds: float) -> dict[str, Any]:
    online = agent.last_seen_at is not None and (now - agent.last_seen_at).total_seconds() <= online_seconds
    return {"id": agent.id, "state": agent.state, "host": serial, "hostname": agent.hostname,
            "machine_id": agent.machine_id, "serial": agent.serial, "version": agent.version,
            "address": agent.address, "online": online and agent.state == "accepted",
            "created_at": agent.created_at.isoformat(),
            "last_seen_at": agent.last_seen_at.isoformat() if agent.last_seen_at else None,
            "decided_by": agent.decided_by, "enrolled_by_install": agent.install_id}
