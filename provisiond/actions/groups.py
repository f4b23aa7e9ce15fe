"""Group actions: add, edit (JSON Merge Patch), delete.

An edit of a group's variables is checked against every member's profile
(:mod:`provisiond.kickstart.guard`) before it commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisiond.actions.audit import audited
from provisiond.actions.principal import Principal, Role
from provisiond.inventory import groups as group_store
from provisiond.inventory.patch import merge_patch
from provisiond.kickstart import secrets
from provisiond.kickstart.guard import changed
from provisiond.services import Services


def create(svc: Services, who: Principal, document: Mapping[str, Any]) -> dict[str, Any]:
    with audited(svc, who, "groups.create", Role.ADMIN, [str(document.get("name", ""))]) as act:
        secret = secrets.names(svc.profiles)
        spec = group_store.parse_group(secrets.unmasked(document, {}, secret))
        with svc.db.write() as session:
            group = group_store.create_group(session, spec)
            act.done(session, f"group {spec.name} added")
            return group_store.group_to_dict(group, 0, secret)


def edit(svc: Services, who: Principal, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Merge Patch (RFC 7396) of the group, as for hosts."""
    with audited(svc, who, "groups.edit", Role.ADMIN, [name]) as act, svc.db.write() as session:
        group = group_store.get_group(session, name)
        old_variables = dict(group.variables)
        secret = secrets.names(svc.profiles)
        merged = merge_patch(group_store.group_to_dict(group), patch)
        spec = group_store.parse_group(secrets.unmasked(merged, old_variables, secret))
        members = svc.guard.members(session, [group.id])
        before = svc.guard.variables(session, members)
        group = group_store.update_group(session, name, spec)
        session.flush()
        svc.guard.check_layer(session, changed(old_variables, spec.variables), members)
        svc.guard.check(session, before, members)
        act.done(session, f"group {name} edited: {', '.join(sorted(patch))}")
        return group_store.group_to_dict(group, len(members), secret)


def delete(svc: Services, who: Principal, name: str) -> None:
    with audited(svc, who, "groups.delete", Role.ADMIN, [name]) as act, svc.db.write() as session:
        group_store.delete_group(session, name)
        act.done(session, f"group {name} deleted")

