"""The write-time check of template variables: no write of a host, a group
or an import may leave a host with a variable its profile's types refuse.

The check compares each affected host's variables (every layer merged, as
the composer merges them) after the write with what they were before it, and
checks the variables whose value the write changed (all of them when the
host is new or changed profile). So a value of the wrong kind is refused
with 400 when it is written, naming the variable, the expected type and a
host it would break, and a write never fails for a problem it did not make.
Checks are made once per (profile, variable, value): a group's variable
read by ten thousand hosts is checked once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from provisiond import models
from provisiond.errors import NotFound, ValidationError
from provisiond.kickstart.composer import layered
from provisiond.kickstart.profiles import Profile, ProfileStore
from provisiond.kickstart.variable_types import VariableType

#: At most this many ids in one ``IN (...)``; more are found by a scan.
_CHUNK = 500
_MISSING = object()


@dataclass(frozen=True)
class HostVariables:
    """One host's variables as its kickstart will see them."""

    serial: str
    profile: str
    merged: Mapping[str, Any]


class VariableRefused(ValidationError):
    """A write would give a host a variable its profile's types refuse."""

    def __init__(self, field: str, problem: str, serial: str, location: str | None = None) -> None:
        super().__init__(field, problem, location)
        self.serial = serial

    def at(self, location: str) -> VariableRefused:
        return VariableRefused(self.field, self.problem, self.serial, location)


@dataclass
class _Finding:
    field: str
    problem: str
    serial: str
    profile: str
    hosts: int = 1


class VariableGuard:
    def __init__(self, profiles: ProfileStore, global_variables: Mapping[str, Any]) -> None:
        self.profiles = profiles
        self.global_variables = dict(global_variables)

    # ------------------------------------------------------------------ reading

    def variables(self, session: Session, host_ids: Iterable[int]) -> dict[int, HostVariables]:
        """The merged variables of these hosts, read in a few statements.
        A group's (and a profile's) values are one object shared by every
        host that has them, so :meth:`check` checks each once."""
        ids = set(host_ids)
        h, hg, g = models.Host.__table__, models.host_groups, models.Group.__table__
        hosts = {row.id: row for row in _rows(session, select(h.c.id, h.c.serial, h.c.profile, h.c.variables),
                                              h.c.id, ids)}
        memberships: dict[int, list[int]] = {}
        for host_id, group_id in _rows(session, select(hg.c.host_id, hg.c.group_id), hg.c.host_id, ids):
            memberships.setdefault(host_id, []).append(group_id)
        wanted = {group_id for group_ids in memberships.values() for group_id in group_ids}
        groups = {row.id: row for row in session.execute(select(g.c.id, g.c.name, g.c.priority, g.c.variables)
                                                         .where(g.c.id.in_(wanted)))} if wanted else {}
        profiles = self.profiles.all()
        result = {}
        for host_id, row in hosts.items():
            profile = profiles.get(row.profile)
            if profile is None:
                continue  # a host whose profile is gone renders nothing; the profile check says so
            ordered = sorted((groups[gid] for gid in memberships.get(host_id, ())), key=lambda r: (r.priority, r.name))
            merged = layered(profile, self.global_variables, [group.variables or {} for group in ordered],
                             row.variables or {})
            result[host_id] = HostVariables(row.serial, row.profile, merged)
        return result

    @staticmethod
    def members(session: Session, group_ids: Iterable[int]) -> list[int]:
        ids = list(group_ids)
        if not ids:
            return []
        hg = models.host_groups
        return list(session.scalars(select(hg.c.host_id).where(hg.c.group_id.in_(ids)).distinct()))

    # ------------------------------------------------------------------ checking

    def check(self, session: Session, before: Mapping[int, HostVariables], host_ids: Iterable[int]) -> None:
        """Raise a 400 (:class:`ValidationError`) if the write just made (in
        ``session``'s transaction, flushed) gave any of ``host_ids`` a
        variable its profile's types refuse; ``before`` is what
        :meth:`variables` read before the write."""
        findings: dict[tuple[str, str, Any], _Finding | None] = {}
        first: _Finding | None = None
        profiles = self.profiles.all()
        for host_id, after in self.variables(session, host_ids).items():
            profile = profiles[after.profile]  # variables() left hosts without one out
            was = before.get(host_id)
            for name, kind in profile.types.items():
                value = after.merged.get(name, _MISSING)
                if was is not None and was.profile == after.profile and was.merged.get(name, _MISSING) == value:
                    continue  # this write did not change it
                key = (profile.name, name, _fingerprint(value))
                if key not in findings:
                    findings[key] = _finding(name, kind, value, after.serial, profile)
                elif findings[key] is not None:
                    findings[key].hosts += 1  # type: ignore[union-attr]
                finding = findings[key]
                if finding is not None and first is None:
                    first = finding
        if first is not None:
            more = f" and {first.hosts - 1} other host(s)" if first.hosts > 1 else ""
            raise VariableRefused(first.field, f"{first.problem}: host {first.serial}{more} (profile "
                                               f"{first.profile}) would get a kickstart that does not render",
                                  first.serial)

    def check_layer(self, session: Session, values: Mapping[str, Any], host_ids: Iterable[int]) -> None:
        """The values a write sets in one layer (a group's variables), each
        against the type every affected host's profile declares for it,
        whether or not a higher layer hides it today: a wrong-typed value
        is refused even while another layer overrides it."""
        if not values:
            return
        seen: set[tuple[str, str]] = set()
        h = models.Host.__table__
        ids = list(host_ids)
        for start in range(0, len(ids), _CHUNK):
            for serial, profile_name in session.execute(select(h.c.serial, h.c.profile)
                                                        .where(h.c.id.in_(ids[start:start + _CHUNK]))):
                profile = self._profile(profile_name)
                if profile is None:
                    continue
                for name, value in values.items():
                    kind = profile.types.get(name)
                    if kind is None or (profile.name, name) in seen:
                        continue
                    seen.add((profile.name, name))
                    problem = kind.problem(value)
                    if problem is not None:
                        raise VariableRefused(f"variables.{name}{problem[0]}",
                                              f"{problem[1]}: profile {profile.name} (of host {serial}) declares "
                                              f"it so", serial)

    def check_values(self, profile_name: str, values: Mapping[str, Any], field: str) -> None:
        """Check a layer on its own (one-off ``--var`` values of a preview)."""
        profile = self._profile(profile_name)
        if profile is None:
            return
        for name, value in values.items():
            kind = profile.types.get(name)
            problem = kind.problem(value) if kind is not None else None
            if problem is not None:
                raise ValidationError(f"{field}.{name}{problem[0]}", f"{problem[1]} (profile {profile.name})")

    def _profile(self, name: str) -> Profile | None:
        try:
            return self.profiles.get(name)
        except NotFound:
            return None


def _rows(session: Session, query: Any, column: Any, ids: set[int]) -> list[Any]:
    """``query``'s rows whose ``column`` is one of ``ids``: a few ids by
    ``IN``, many (an import) by reading the table once and keeping those
    (an ``IN`` of thousands of binds costs more to build than the scan)."""
    if not ids:
        return []
    if len(ids) <= _CHUNK:
        return list(session.execute(query.where(column.in_(list(ids)))))
    key = column.key
    return [row for row in session.execute(query) if getattr(row, key) in ids]


def _finding(name: str, kind: VariableType, value: Any, serial: str, profile: Profile) -> _Finding | None:
    if value is _MISSING:
        if kind.nullable:
            return None
        return _Finding(f"variables.{name}", f"is not set; profile {profile.name} needs {kind.words}", serial,
                        profile.name)
    problem = kind.problem(value)
    if problem is None:
        return None
    return _Finding(f"variables.{name}{problem[0]}", problem[1], serial, profile.name)


def _fingerprint(value: Any) -> Any:
    """What a value is checked once per: a scalar itself; a list or mapping
    by identity (a layer's value is one object for every host that has it;
    the objects live as long as the check)."""
    if isinstance(value, (list, dict)):
        return ("object", id(value))
    return (type(value).__name__, value)


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The variables of one layer a write set or changed (not those it removed)."""
    return {name: value for name, value in after.items() if name not in before or before[name] != value}
