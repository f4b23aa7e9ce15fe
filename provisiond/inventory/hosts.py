"""The SQL data source for hosts: read records, write validated specs.

Every function takes the caller's ``Session`` and never commits: the caller's
unit of work decides. Host *install state* is not written here (the install
lifecycle owns it); this module writes what the operator says a host is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import bindparam, delete, insert, or_, select, true, update
from sqlalchemy.orm import Session, selectinload

from provisiond import models
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond import events
from provisiond.inventory.fields import serial_key
from provisiond.inventory.records import Bmc, Disk, GroupVars, HostRecord, HostSpec, Nic
from provisiond.inventory.schema import UNSET, _Unset
from provisiond.vault import Vault


class DuplicateValue(ValidationError):
    """A value that must be unique already belongs to another host."""

    status = 409
    code = "duplicate"


# --------------------------------------------------------------------------- reading


def _loaded() -> Any:
    return select(models.Host).options(selectinload(models.Host.nics), selectinload(models.Host.groups))


def to_record(host: models.Host) -> HostRecord:
    nics = tuple(Nic(mac=n.mac, name=n.name, primary=n.primary) for n in host.nics)
    return _record(host, nics, host.groups, host.bmc_secret is not None)


def _record(host: Any, nics: tuple[Nic, ...], groups: Iterable[Any], has_bmc_secret: bool) -> HostRecord:
    """A record from the host's columns (an ORM object or a row: the same
    attribute names), its NICs and its groups (``name``, ``priority``,
    ``variables``, any order)."""
    ordered = sorted(groups, key=lambda g: (g.priority, g.name))
    return HostRecord(
        serial=host.serial,
        hostname=host.hostname,
        profile=host.profile,
        nics=nics,
        ip=host.ip,
        prefix=host.prefix,
        gateway=host.gateway,
        dns=tuple(host.dns or ()),
        bmc=Bmc(host.bmc_type, host.bmc_address, host.bmc_port, host.bmc_user) if host.bmc_type else None,
        manufacturer=host.manufacturer,
        model=host.model,
        cpus=host.expected_cpus,
        memory_mib=host.expected_memory_mib,
        disks=None if host.expected_disks is None else tuple(Disk(**d) for d in host.expected_disks),
        os=host.os,
        owner=host.owner,
        groups=tuple(g.name for g in ordered),
        site=host.site,
        rack=host.rack,
        protected=host.protected,
        variables=MappingProxyType(dict(host.variables or {})),
        state=host.state,
        state_reason=host.state_reason,
        has_bmc_secret=has_bmc_secret,
        group_vars=tuple(GroupVars(g.name, g.priority, MappingProxyType(dict(g.variables))) for g in ordered),
    )


def _record_query() -> Any:
    """One host with its NICs and groups in ONE statement (one row per NIC x
    group): the per-request read of the kickstart and host routes, with no
    ORM identity map and one database round trip. Never selects the BMC
    secret, only whether there is one."""
    hosts, nics, groups, links = (models.Host.__table__, models.Nic.__table__, models.Group.__table__,
                                  models.host_groups)
    return (
        select(*(c for c in hosts.c if c.key not in ("bmc_secret", "created_at", "updated_at")),
               hosts.c.bmc_secret.is_not(None).label("has_bmc_secret"),
               nics.c.mac.label("nic_mac"), nics.c.name.label("nic_name"), nics.c.primary.label("nic_primary"),
               nics.c.position.label("nic_position"),
               groups.c.name.label("group_name"), groups.c.priority.label("group_priority"),
               groups.c.variables.label("group_variables"))
        .select_from(hosts)
        .outerjoin(nics, nics.c.host_id == hosts.c.id)
        .outerjoin(links, links.c.host_id == hosts.c.id)
        .outerjoin(groups, groups.c.id == links.c.group_id)
    )


#: Built once, so that SQLAlchemy computes its cache key once, not per request.
_RECORD_BY_SERIAL = _record_query().where(models.Host.__table__.c.serial_key == bindparam("serial_key"))


def _record_from_rows(rows: Sequence[Any]) -> HostRecord:
    nics: dict[str, tuple[int, Nic]] = {}
    groups: dict[str, GroupVars] = {}
    for row in rows:
        if row.nic_mac is not None and row.nic_mac not in nics:
            nics[row.nic_mac] = (row.nic_position, Nic(mac=row.nic_mac, name=row.nic_name, primary=row.nic_primary))
        if row.group_name is not None and row.group_name not in groups:
            groups[row.group_name] = GroupVars(row.group_name, row.group_priority, row.group_variables or {})
    ordered_nics = tuple(nic for _position, nic in sorted(nics.values(), key=lambda item: item[0]))
    return _record(rows[0], ordered_nics, groups.values(), bool(rows[0].has_bmc_secret))


def get_host(session: Session, serial: str) -> models.Host:
    host = session.scalars(_loaded().where(models.Host.serial_key == serial_key(serial))).first()
    if host is None:
        raise NotFound(f"no host with serial number {serial!r}")
    return host


def get_hosts(session: Session, serials: Sequence[str]) -> list[models.Host]:
    """Many hosts in one query, in the order asked; 404 naming the first unknown serial."""
    keys = [serial_key(serial) for serial in serials]
    found = {host.serial_key: host for host in session.scalars(_loaded().where(models.Host.serial_key.in_(keys)))}
    for serial, key in zip(serials, keys):
        if key not in found:
            raise NotFound(f"no host with serial number {serial!r}")
    return [found[key] for key in keys]


def existing_ids(session: Session, serials: Sequence[str]) -> list[int]:
    """The ids of those of these serial numbers that are hosts (any case)."""
    keys = list({serial_key(serial) for serial in serials})
    ids: list[int] = []
    for start in range(0, len(keys), 5000):
        ids.extend(session.scalars(select(models.Host.id).where(models.Host.serial_key.in_(keys[start:start + 5000]))))
    return ids


def load_record(session: Session, serial: str) -> HostRecord:
    rows = session.execute(_RECORD_BY_SERIAL, {"serial_key": serial_key(serial)}).all()
    if not rows:
        raise NotFound(f"no host with serial number {serial!r}")
    return _record_from_rows(rows)


@dataclass(frozen=True)
class HostFilter:
    group: str | None = None
    profile: str | None = None
    state: str | None = None
    site: str | None = None
    rack: str | None = None
    owner: str | None = None
    search: str | None = None  # substring of serial, hostname or IP, or of one of its MACs


#: What a page of hosts may be sorted by.
SORTS = {"serial": models.Host.serial_key, "hostname": models.Host.hostname, "state": models.Host.state,
         "profile": models.Host.profile, "owner": models.Host.owner, "ip": models.Host.ip,
         "updated": models.Host.updated_at}


def _filtered(query: Any, where: HostFilter) -> Any:
    if where.group:
        query = query.where(models.Host.groups.any(models.Group.name == where.group))
    for column, value in ((models.Host.profile, where.profile), (models.Host.state, where.state),
                          (models.Host.site, where.site), (models.Host.rack, where.rack),
                          (models.Host.owner, where.owner)):
        if value:
            query = query.where(column == value)
    if where.search:
        text = where.search.strip()
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        mac = pattern.lower().replace("-", ":")
        query = query.where(or_(models.Host.serial.ilike(pattern, escape="\\"),
                                models.Host.hostname.ilike(pattern, escape="\\"),
                                models.Host.ip.like(pattern, escape="\\"),
                                models.Host.nics.any(models.Nic.mac.like(mac, escape="\\"))))
    return query


def list_records(session: Session, where: HostFilter = HostFilter(), limit: int | None = None,
                 offset: int = 0) -> list[HostRecord]:
    query = _filtered(_loaded(), where).order_by(models.Host.serial)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [to_record(h) for h in session.scalars(query)]


def page_records(session: Session, where: HostFilter, sort: str = "serial", descending: bool = False,
                 limit: int = 50, offset: int = 0) -> tuple[int, list[HostRecord]]:
    """One page of the hosts that match, sorted by ``sort`` (one of
    :data:`SORTS`; ties by serial), and how many match in all."""
    from sqlalchemy import func

    column = SORTS[sort]
    total = session.scalar(_filtered(select(func.count()).select_from(models.Host), where)) or 0
    order: list[Any] = [column.desc() if descending else column.asc()]
    if sort != "serial":
        order.append(models.Host.serial_key)
    query = _filtered(_loaded(), where).order_by(*order).offset(offset).limit(limit)
    return int(total), [to_record(h) for h in session.scalars(query)]


def owners(session: Session) -> list[str]:
    """Every owner named on a host, sorted (the hosts page's filter)."""
    return [o for o in session.scalars(select(models.Host.owner).where(models.Host.owner.is_not(None))
                                       .distinct().order_by(models.Host.owner)) if o]


# --------------------------------------------------------------------------- writing


def spec_columns(spec: HostSpec) -> dict[str, Any]:
    """The ``hosts`` columns a spec sets (not state, not the secret)."""
    return {
        "serial": spec.serial,
        "serial_key": serial_key(spec.serial),
        "hostname": spec.hostname,
        "ip": spec.ip,
        "prefix": spec.prefix,
        "gateway": spec.gateway,
        "dns": list(spec.dns),
        "bmc_type": spec.bmc.type if spec.bmc else None,
        "bmc_address": spec.bmc.address if spec.bmc else None,
        "bmc_port": spec.bmc.port if spec.bmc else None,
        "bmc_user": spec.bmc.user if spec.bmc else None,
        "manufacturer": spec.manufacturer,
        "model": spec.model,
        "expected_cpus": spec.cpus,
        "expected_memory_mib": spec.memory_mib,
        "expected_disks": None if spec.disks is None else [
            {"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in spec.disks
        ],
        "profile": spec.profile,
        "os": spec.os,
        "owner": spec.owner,
        "site": spec.site,
        "rack": spec.rack,
        "protected": spec.protected,
        "variables": dict(spec.variables),
    }


def check_unique(session: Session, spec: HostSpec, own_id: int | None) -> None:
    """Refuse a hostname, IP or MAC that another host already has."""
    others = models.Host.id != own_id if own_id is not None else true()
    checks: list[tuple[str, Any, Any]] = [("hostname", models.Host.hostname, spec.hostname)]
    if spec.ip:
        checks.append(("ip", models.Host.ip, spec.ip))
    for field, column, value in checks:
        owner = session.scalar(select(models.Host.serial).where(column == value, others))
        if owner is not None:
            raise DuplicateValue(field, f"{value} already belongs to host {owner}")
    macs = [n.mac for n in spec.nics]
    clash = session.execute(
        select(models.Nic.mac, models.Host.serial).join(models.Host)
        .where(models.Nic.mac.in_(macs), others)
    ).first()
    if clash is not None:
        raise DuplicateValue("nics", f"MAC {clash[0]} already belongs to host {clash[1]}")


def create_host(session: Session, spec: HostSpec, password: str | None | _Unset, vault: Vault) -> models.Host:
    existing = session.scalar(select(models.Host.serial).where(models.Host.serial_key == serial_key(spec.serial)))
    if existing is not None:
        same = "" if existing == spec.serial else f" (as {existing!r}: serial numbers are the same in any case)"
        raise Conflict(f"a host with serial number {spec.serial!r} already exists{same}", field="serial")
    check_unique(session, spec, None)
    host = models.Host(**spec_columns(spec))
    host.bmc_secret = _encrypted(password, None, vault)
    host.nics = _nic_rows(spec)
    host.groups = _groups(session, spec.groups)
    session.add(host)
    session.flush()
    record_event(session, host.id, "host", f"host {spec.serial} added to the data source")
    return host


def update_host(session: Session, serial: str, spec: HostSpec, password: str | None | _Unset,
                vault: Vault) -> models.Host:
    host = get_host(session, serial)
    if serial_key(spec.serial) != host.serial_key:
        raise ValidationError("serial", "the serial number identifies the host and cannot be changed")
    check_unique(session, spec, host.id)
    before = spec_columns(to_record(host))
    after = spec_columns(spec)
    for column, value in after.items():
        setattr(host, column, value)
    host.bmc_secret = _encrypted(password, host.bmc_secret, vault)
    nics_changed = [(n.mac, n.name, n.primary) for n in host.nics] != [(n.mac, n.name, n.primary) for n in spec.nics]
    if nics_changed:
        host.nics.clear()
        session.flush()  # free the MACs before re-adding them
        host.nics.extend(_nic_rows(spec))
    groups_before = sorted(g.name for g in host.groups)
    host.groups = _groups(session, spec.groups)
    changed = sorted(k for k in after if after[k] != before[k])
    if nics_changed:
        changed.append("nics")
    if groups_before != sorted(spec.groups):
        changed.append("groups")
    if password is not UNSET:
        changed.append("bmc.password")
    session.flush()
    if changed:
        record_event(session, host.id, "host", f"host {serial} edited: {', '.join(changed)}")
    return host


def delete_host(session: Session, serial: str) -> None:
    host = get_host(session, serial)
    # The last line of its timeline, written while the host exists (so it
    # carries its serial); the host's events stay, found by serial.
    record_event(session, host.id, events.Kind.HOST, f"host {host.serial} removed from the data source")
    session.delete(host)


def _encrypted(password: str | None | _Unset, current: str | None, vault: Vault) -> str | None:
    if isinstance(password, _Unset):
        return current
    return None if password is None else vault.encrypt(password)


def _nic_rows(spec: HostSpec) -> list[models.Nic]:
    return [models.Nic(mac=n.mac, name=n.name, primary=n.primary, position=i) for i, n in enumerate(spec.nics)]


def _groups(session: Session, names: Sequence[str]) -> list[models.Group]:
    if not names:
        return []
    found = {g.name: g for g in session.scalars(select(models.Group).where(models.Group.name.in_(names)))}
    for name in names:
        if name not in found:
            raise ValidationError("groups", f"unknown group {name!r}")
    return [found[name] for name in names]


def record_event(session: Session, host_id: int | None, kind: str, message: str,
                 data: dict[str, Any] | None = None) -> None:
    session.flush()  # the event's serial is read from its host row
    events.record(session, kind, message, host_id=host_id, data=data)


# --------------------------------------------------------------------------- bulk


@dataclass(frozen=True)
class ImportRow:
    spec: HostSpec
    password: str | None | _Unset
    location: str  # file:line, for error messages

    @property
    def key(self) -> str:
        """The serial number as hosts are matched by (any case)."""
        return serial_key(self.spec.serial)


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int


def import_hosts(session: Session, rows: Sequence[ImportRow], vault: Vault, source: str) -> ImportResult:
    """Upsert many hosts by serial number in the caller's transaction.

    Every uniqueness rule is checked against the data source as it will be
    after the import, before anything is written; the first broken rule
    raises with the row's file and line, and nothing is written.
    """
    existing = dict(session.execute(select(models.Host.serial_key, models.Host.id)).all())
    _check_rows_unique(session, rows, existing)
    group_ids = _group_ids(session, rows)
    new = [r for r in rows if r.key not in existing]
    old = [r for r in rows if r.key in existing]
    ids = dict(existing)
    # Updates first, so that a new host can take a hostname, IP or MAC an
    # existing host gives up in the same import.
    if old:
        old_ids = [existing[r.key] for r in old]
        session.execute(delete(models.Nic).where(models.Nic.host_id.in_(old_ids)))
        session.execute(delete(models.host_groups).where(models.host_groups.c.host_id.in_(old_ids)))
        _release_unique_values(session, old, existing)
        session.execute(update(models.Host), [_update_values(r, existing[r.key], vault) for r in old])
    if new:
        returned = session.execute(
            insert(models.Host).returning(models.Host.serial_key, models.Host.id, sort_by_parameter_order=True),
            [_insert_values(r, vault) for r in new],
        ).all()
        ids.update(returned)
    nic_values = [
        {"host_id": ids[r.key], "mac": n.mac, "name": n.name, "primary": n.primary, "position": i}
        for r in rows for i, n in enumerate(r.spec.nics)
    ]
    if nic_values:
        session.execute(insert(models.Nic), nic_values)
    links = [{"host_id": ids[r.key], "group_id": group_ids[g]} for r in rows for g in r.spec.groups]
    if links:
        session.execute(insert(models.host_groups), links)
    events.write(session, [
        events.line(events.Kind.HOST, f"host {r.spec.serial} {'updated' if r.key in existing else 'added'} "
                    f"by import of {source}", host_id=ids[r.key])
        for r in rows
    ])
    session.expire_all()
    return ImportResult(created=len(new), updated=len(old))


def _release_unique_values(session: Session, old: Sequence[ImportRow], existing: dict[str, int]) -> None:
    """Park the hostnames and IPs that updated hosts give up, so that two
    hosts can swap them: the unique constraints hold after every row's
    UPDATE, not only at the end. The parked hostname is not RFC 1123 and
    so can never clash with a real one."""
    wanted = {existing[r.key]: r.spec for r in old}
    current = session.execute(
        select(models.Host.id, models.Host.hostname, models.Host.ip).where(models.Host.id.in_(list(wanted)))
    ).all()
    parked = [
        {"id": host_id, "hostname": f"-import-{host_id}" if hostname != wanted[host_id].hostname else hostname,
         "ip": None if ip != wanted[host_id].ip else ip}
        for host_id, hostname, ip in current
        if hostname != wanted[host_id].hostname or (ip is not None and ip != wanted[host_id].ip)
    ]
    if parked:
        session.execute(update(models.Host), parked)


def _insert_values(row: ImportRow, vault: Vault) -> dict[str, Any]:
    now = models.utcnow()
    values = spec_columns(row.spec)
    values.update(state="idle", created_at=now, updated_at=now,
                  bmc_secret=_encrypted(row.password, None, vault))
    return values


def _update_values(row: ImportRow, host_id: int, vault: Vault) -> dict[str, Any]:
    values = spec_columns(row.spec)
    values.update(id=host_id, updated_at=models.utcnow())
    if not isinstance(row.password, _Unset):
        values["bmc_secret"] = _encrypted(row.password, None, vault)
    return values


def _group_ids(session: Session, rows: Iterable[ImportRow]) -> dict[str, int]:
    wanted = {g for r in rows for g in r.spec.groups}
    if not wanted:
        return {}
    found = dict(session.execute(select(models.Group.name, models.Group.id)
                                 .where(models.Group.name.in_(wanted))).all())
    for row in rows:
        for group in row.spec.groups:
            if group not in found:
                raise ValidationError("groups", f"unknown group {group!r}", row.location)
    return found


def _check_rows_unique(session: Session, rows: Sequence[ImportRow], existing: dict[str, int]) -> None:
    importing = {r.key for r in rows}
    owners: dict[str, dict[Any, str]] = {"hostname": {}, "ip": {}, "mac": {}}
    # What stays: the values of hosts the import does not touch.
    for key, serial, hostname, ip in session.execute(
            select(models.Host.serial_key, models.Host.serial, models.Host.hostname, models.Host.ip)):
        if key not in importing:
            owners["hostname"][hostname] = serial
            if ip:
                owners["ip"][ip] = serial
    for mac, key, serial in session.execute(
            select(models.Nic.mac, models.Host.serial_key, models.Host.serial).join(models.Host)):
        if key not in importing:
            owners["mac"][mac] = serial
    seen: dict[str, tuple[str, str]] = {}
    for row in rows:
        spec = row.spec
        if row.key in seen:
            serial, location = seen[row.key]
            same = "" if serial == spec.serial else f" (as {serial}: serial numbers are the same in any case)"
            raise DuplicateValue("serial", f"{spec.serial} is also on {location}{same}", row.location)
        seen[row.key] = (spec.serial, row.location)
        claims = [("hostname", "hostname", spec.hostname)]
        if spec.ip:
            claims.append(("ip", "ip", spec.ip))
        claims += [("mac", "nics", n.mac) for n in spec.nics]
        for kind, field, value in claims:
            holder = owners[kind].get(value)
            if holder is not None and serial_key(holder) != row.key:
                label = "MAC " + value if kind == "mac" else value
                raise DuplicateValue(field, f"{label} already belongs to host {holder}", row.location)
            owners[kind][value] = spec.serial
