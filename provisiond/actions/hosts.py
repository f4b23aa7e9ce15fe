"""Host actions: add, replace, edit (JSON Merge Patch), delete, import.

Every write checks, in its transaction, that no affected host is left with a
template variable its profile refuses (:mod:`provisiond.kickstart.guard`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from provisiond.actions.audit import Audited, audited, authorize
from provisiond.actions.principal import Principal, Role
from provisiond.errors import Conflict, NotFound
from provisiond.install import lifecycle
from provisiond.inventory import groups as group_store
from provisiond.inventory import hosts as host_store
from provisiond.inventory.fields import serial_key
from provisiond.inventory.patch import patch_host
from provisiond.inventory.records import HostRecord
from provisiond.inventory.schema import host_to_dict, parse_host
from provisiond.inventory.transfer import ParsedImport, parse_import
from provisiond.kickstart import secrets
from provisiond.kickstart.guard import VariableRefused, changed
from provisiond.services import Services


def create(svc: Services, who: Principal, document: Mapping[str, Any]) -> HostRecord:
    with audited(svc, who, "hosts.create", Role.OPERATOR, [str(document.get("serial", ""))]) as act:
        document = secrets.unmasked(document, {}, secrets.names(svc.profiles))
        spec, password = parse_host(document, svc.profiles.names())
        with svc.db.write() as session:
            host = host_store.create_host(session, spec, password, svc.vault)
            svc.guard.check(session, {}, [host.id])
            act.done(session, f"host {host.serial} added", targets=[host.serial])
            return host_store.to_record(host)


def replace(svc: Services, who: Principal, serial: str, document: Mapping[str, Any]) -> HostRecord:
    """PUT: the whole document (the BMC password kept unless it names one)."""
    with audited(svc, who, "hosts.replace", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:
            stored = host_store.load_record(session, serial).variables
            document = secrets.unmasked(document, stored, secrets.names(svc.profiles))
            spec, password = parse_host({"serial": serial, **document}, svc.profiles.names())
            host = host_store.get_host(session, serial)
            before = svc.guard.variables(session, [host.id])
            host = host_store.update_host(session, serial, spec, password, svc.vault)
            svc.guard.check(session, before, [host.id])
            act.done(session, f"host {host.serial} replaced", targets=[host.serial])
            return host_store.to_record(host)


def edit(svc: Services, who: Principal, serial: str, patch: Mapping[str, Any]) -> HostRecord:
    """PATCH: a JSON Merge Patch of the host document (RFC 7396), read,
    merged and written in one transaction, so no concurrent edit is lost."""
    with audited(svc, who, "hosts.edit", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:
            current = host_to_dict(host_store.load_record(session, serial))
            if current["bmc"]:
                current["bmc"].pop("password_set")
            merged = secrets.unmasked(patch_host(current, patch), current["variables"], secrets.names(svc.profiles))
            spec, password = parse_host(merged, svc.profiles.names())
            host = host_store.get_host(session, serial)
            before = svc.guard.variables(session, [host.id])
            host = host_store.update_host(session, serial, spec, password, svc.vault)
            svc.guard.check(session, before, [host.id])
            act.done(session, f"host {host.serial} edited: {', '.join(sorted(patch))}", targets=[host.serial])
            return host_store.to_record(host)


def delete(svc: Services, who: Principal, serial: str, force: bool = False) -> None:
    """Protected hosts and hosts with an install under way need ``force``."""
    with audited(svc, who, "hosts.delete", Role.OPERATOR, [serial]) as act:
        with svc.db.write() as session:
            host = host_store.get_host(session, serial)
            if host.protected and not force:
                raise Conflict(f"host {host.serial} is protected; delete it with force=true if you mean it")
            if lifecycle.active_install(session, host.id) is not None and not force:
                raise Conflict(f"host {host.serial} is {host.state} with an install under way; cancel it first")
            host_store.delete_host(session, host.serial)
            act.done(session, f"host {host.serial} deleted{' (forced)' if force else ''}", targets=[host.serial])


def import_file(svc: Services, who: Principal, text: str, filename: str, fmt: str) -> dict[str, int]:
    """Upsert the groups and hosts of a YAML/JSON/CSV file, all or nothing."""
    with audited(svc, who, "hosts.import", Role.OPERATOR, [filename]) as act:
        return _import(svc, who, act, parse_import(text, filename, fmt, svc.profiles.names()), filename)


def import_parsed(svc: Services, who: Principal, parsed: ParsedImport, filename: str) -> dict[str, int]:
    """:func:`import_file` of a file already parsed."""
    with audited(svc, who, "hosts.import", Role.OPERATOR, [filename]) as act:
        return _import(svc, who, act, parsed, filename)


def _import(svc: Services, who: Principal, act: Audited, parsed: ParsedImport, filename: str) -> dict[str, int]:
    """The writing half of an import: one transaction, in which no affected
    host may be left with a variable its profile refuses. An import that
    defines groups needs an admin (groups set every member's variables)."""
    if parsed.groups:
        authorize(who, Role.ADMIN, "an import that defines groups")
    act.targets = [row.spec.serial for row in parsed.hosts]
    with svc.db.write() as session:
        parsed = _keep_masked_secrets(session, parsed, secrets.names(svc.profiles))
        existing = host_store.existing_ids(session, [row.spec.serial for row in parsed.hosts])
        groups = [group_store.existing_id(session, group.name) for group in parsed.groups]
        touched = [*existing, *svc.guard.members(session, [g for g in groups if g is not None])]
        before = svc.guard.variables(session, touched)
        old_variables = {g.name: dict(g.variables) for g in map(lambda s: group_store.find(session, s.name),
                                                                  parsed.groups) if g is not None}
        upserted = [group_store.upsert_group(session, group) for group in parsed.groups]
        session.flush()
        result = host_store.import_hosts(session, parsed.hosts, svc.vault, filename)
        imported = host_store.existing_ids(session, [row.spec.serial for row in parsed.hosts])
        members = svc.guard.members(session, [group.id for group in upserted])
        try:
            for group in upserted:
                svc.guard.check_layer(session, changed(old_variables.get(group.name, {}), group.variables),
                                      svc.guard.members(session, [group.id]))
            svc.guard.check(session, before, [*imported, *members])
        except VariableRefused as refused:  # say where, when the host is one of the file's
            row = next((row for row in parsed.hosts if serial_key(row.spec.serial) == serial_key(refused.serial)),
                       None)
            raise (refused.at(row.location) if row is not None else refused) from None
        act.done(session, f"import of {filename}: {result.created} created, {result.updated} updated, "
                          f"{len(parsed.groups)} group(s)", data={"groups": [g.name for g in parsed.groups]})
    return {"created": result.created, "updated": result.updated, "groups": len(parsed.groups)}


def _keep_masked_secrets(session: Any, parsed: ParsedImport, secret: frozenset[str]) -> ParsedImport:
    """An export imported again: its masked secrets keep the stored values
    (a new host's are left unset; a group's likewise)."""
    if not secret:
        return parsed
    rows = []
    for row in parsed.hosts:
        if secrets.MASK in row.spec.variables.values():
            try:
                stored: Mapping[str, Any] = host_store.load_record(session, row.spec.serial).variables
            except NotFound:
                stored = {}
            kept = MappingProxyType(secrets.keep_masked(row.spec.variables, stored, secret))
            row = dataclasses.replace(row, spec=dataclasses.replace(row.spec, variables=kept))
        rows.append(row)
    groups = []
    for group in parsed.groups:
        if secrets.MASK in group.variables.values():
            found = group_store.find(session, group.name)
            group = dataclasses.replace(group, variables=secrets.keep_masked(
                group.variables, dict(found.variables) if found is not None else {}, secret))
        groups.append(group)
    return ParsedImport(groups, rows)
