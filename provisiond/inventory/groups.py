"""Groups: named sets of hosts carrying template variables and a priority."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.inventory import fields

GROUP_KEYS = frozenset({"name", "description", "priority", "variables", "install_cap"})


@dataclass(frozen=True)
class GroupSpec:
    name: str
    description: str
    priority: int
    variables: dict[str, Any]
    #: At most this many of the group's hosts install at once (None: no own cap).
    install_cap: int | None = None


def parse_group(data: Mapping[str, Any]) -> GroupSpec:
    if not isinstance(data, Mapping):
        raise ValidationError("group", "expected a mapping of fields")
    for key in data:
        if key not in GROUP_KEYS and key != "hosts":
            raise ValidationError(str(key), f"unknown field (known: {', '.join(sorted(GROUP_KEYS))})")
    return GroupSpec(
        name=fields.name(data.get("name"), "name"),
        description=fields.text(data.get("description"), "description", 1024) or "",
        priority=fields.integer(data.get("priority", 0), "priority", -1000, 1000),
        variables=fields.variables(data.get("variables")),
        install_cap=None if data.get("install_cap") in (None, "") else
        fields.integer(data["install_cap"], "install_cap", 1, 100_000),
    )


def group_to_dict(group: models.Group, host_count: int | None = None,
                  secret: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The group as answers show it (``secret``: variable names masked)."""
    from provisiond.kickstart.secrets import redact

    body: dict[str, Any] = {
        "name": group.name,
        "description": group.description,
        "priority": group.priority,
        "variables": redact(group.variables, secret),
        "install_cap": group.install_cap,
    }
    if host_count is not None:
        body["hosts"] = host_count
    return body


def get_group(session: Session, name: str) -> models.Group:
    group = session.scalar(select(models.Group).where(models.Group.name == name))
    if group is None:
        raise NotFound(f"no group named {name!r}")
    return group


def find(session: Session, name: str) -> models.Group | None:
    return session.scalar(select(models.Group).where(models.Group.name == name))


def existing_id(session: Session, name: str) -> int | None:
    return session.scalar(select(models.Group.id).where(models.Group.name == name))


def list_groups(session: Session) -> list[tuple[models.Group, int]]:
    counts = (
        select(models.host_groups.c.group_id, func.count().label("n"))
        .group_by(models.host_groups.c.group_id).subquery()
    )
    rows = session.execute(
        select(models.Group, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.group_id == models.Group.id)
        .order_by(models.Group.priority, models.Group.name)
    ).all()
    return list(rows)


def create_group(session: Session, spec: GroupSpec) -> models.Group:
    if session.scalar(select(models.Group.id).where(models.Group.name == spec.name)) is not None:
        raise Conflict(f"a group named {spec.name!r} already exists", field="name")
    group = models.Group(name=spec.name, description=spec.description, priority=spec.priority,
                         install_cap=spec.install_cap,
                         variables=spec.variables)
    session.add(group)
    session.flush()
    return group


def update_group(session: Session, name: str, spec: GroupSpec) -> models.Group:
    group = get_group(session, name)
    if spec.name != name:
        raise ValidationError("name", "a group cannot be renamed; create a new one and move the hosts")
    group.description = spec.description
    group.priority = spec.priority
    group.variables = spec.variables
    group.install_cap = spec.install_cap
    return group


def upsert_group(session: Session, spec: GroupSpec) -> models.Group:
    existing = session.scalar(select(models.Group).where(models.Group.name == spec.name))
    if existing is None:
        return create_group(session, spec)
    return update_group(session, spec.name, spec)


def delete_group(session: Session, name: str) -> None:
    group = get_group(session, name)
    members = session.scalar(
        select(func.count()).select_from(models.host_groups).where(models.host_groups.c.group_id == group.id)
    )
    if members:
        raise Conflict(f"group {name!r} still has {members} host(s); remove them from it first", field="hosts")
    session.delete(group)
