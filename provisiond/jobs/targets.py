"""Which hosts a job is for.

A target list holds expressions, each one of: ``all`` (every host with an
accepted agent), a serial number, a hostname, a hostname glob (``web-*``,
``db-0[1-3]``), a group name, or an explicit ``serial:SN``, ``host:NAME``,
``group:NAME``. An expression that matches no host is refused (400 naming
it): a typo must not quietly run a job on fewer hosts than meant.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import ValidationError
from provisiond.inventory.fields import serial_key

MAX_TARGETS = 1000
_GLOB = set("*?[")


@dataclass(frozen=True)
class Target:
    host_id: int
    serial: str
    agent_id: int | None  # None: the host has no accepted agent (the run did not run)


def resolve(session: Session, expressions: list[str]) -> list[Target]:
    """The hosts ``expressions`` name, each once, in serial order."""
    if not isinstance(expressions, list) or not expressions or len(expressions) > MAX_TARGETS:
        raise ValidationError("targets", f"expected a list of 1 to {MAX_TARGETS} target expressions")
    hosts = {row.id: row for row in session.execute(select(models.Host.id, models.Host.serial,
                                                          models.Host.hostname))}
    agents: dict[int, int] = {host_id: agent_id for host_id, agent_id in session.execute(
        select(models.Agent.host_id, models.Agent.id).where(
            models.Agent.state == "accepted", models.Agent.host_id.is_not(None))) if host_id is not None}
    chosen: set[int] = set()
    for expression in expressions:
        if not isinstance(expression, str) or not expression.strip():
            raise ValidationError("targets", f"{expression!r} is not a target expression")
        found = _match(session, expression.strip(), hosts, agents)
        if not found:
            raise ValidationError("targets", f"{expression!r} matches no host"
                                  + (" with an accepted agent" if expression == "all" else ""))
        chosen |= found
    return sorted((Target(i, hosts[i].serial, agents.get(i)) for i in chosen), key=lambda t: t.serial)


def _match(session: Session, expression: str, hosts: dict[int, Any], agents: dict[int, int]) -> set[int]:
    kind, sep, value = expression.partition(":")
    if not sep or kind not in ("serial", "host", "group"):
        kind, value = "", expression
    if expression == "all":
        return set(agents)
    found: set[int] = set()
    if kind in ("", "serial"):
        found |= {i for i, h in hosts.items() if serial_key(h.serial) == serial_key(value)}
    if kind in ("", "group"):
        group = session.scalar(select(models.Group).where(models.Group.name == value))
        if group is not None:
            found |= {h.id for h in group.hosts}
    if kind in ("", "host"):
        if _GLOB & set(value):
            found |= {i for i, h in hosts.items() if fnmatch.fnmatchcase(h.hostname, value)}
        else:
            found |= {i for i, h in hosts.items() if h.hostname == value}
    return found
