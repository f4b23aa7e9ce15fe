"""The profile check: does every host's kickstart render, and does every
profile declare the variables its fragments use?

Writes through provisiond are checked as they happen
(:mod:`provisiond.kickstart.guard`); this is for what changes on disk
(profiles and fragments edited by hand) and for data written before the
checks existed. ``provctl profiles check`` and ``GET
/api/v1/checks/profiles`` run it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta
from sqlalchemy.orm import Session

from provisiond.errors import ConfigError, ProvisiondError
from provisiond.inventory import hosts as host_store
from provisiond.kickstart.composer import CONTEXT_NAMES, FRAGMENT_SUFFIX, Composer, InstallContext
from provisiond.kickstart.profiles import ProfileStore

@dataclass(frozen=True)
class Failure:
    serial: str
    profile: str
    message: str
    fragment: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class ProfileProblem:
    profile: str
    message: str


def check_hosts(session: Session, composer: Composer, public_url: str) -> tuple[int, list[Failure]]:
    """Render every host's kickstart: (hosts checked, those that fail)."""
    failures = []
    records = host_store.list_records(session)
    for record in records:
        try:
            composer.render(record, InstallContext("CHECK", public_url))
        except ProvisiondError as exc:
            failures.append(Failure(record.serial, record.profile, exc.message, exc.details.get("fragment"),
                                    exc.details.get("line")))
    return len(records), failures


def check_profiles(profiles: ProfileStore, composer: Composer) -> list[ProfileProblem]:
    """Every variable a profile's fragments use must be declared in its
    ``variable_types`` (or be one of the names every fragment sees)."""
    problems = []
    for profile in sorted(profiles.all().values(), key=lambda p: p.name):
        for fragment in profile.fragments:
            used = _used_variables(composer.env, fragment)
            if used is None:
                problems.append(ProfileProblem(profile.name, f"fragment {fragment!r} is missing or does not parse"))
                continue
            for name in sorted(used - set(profile.types) - CONTEXT_NAMES - set(composer.env.globals)):
                problems.append(ProfileProblem(profile.name, f"fragment {fragment!r} uses variable {name!r}, "
                                                              "which the profile's variable_types do not declare"))
    return problems


def _used_variables(env: jinja2.Environment, fragment: str) -> set[str] | None:
    try:
        source, _filename, _uptodate = env.loader.get_source(env, fragment + FRAGMENT_SUFFIX)  # type: ignore[union-attr]
        return set(meta.find_undeclared_variables(env.parse(source)))
    except (jinja2.TemplateNotFound, jinja2.TemplateSyntaxError):
        return None


def check_settings_variables(global_variables: Mapping[str, Any], profiles: ProfileStore) -> None:
    """The settings' ``variables:`` (the lowest layer) against every profile
    that does not set the variable itself: a ConfigError at start-up naming
    the variable, the expected type and the profile."""
    for profile in profiles.all().values():
        for name, value in global_variables.items():
            kind = profile.types.get(name)
            if kind is None or name in profile.variables:
                continue
            problem = kind.problem(value)
            if problem is not None:
                raise ConfigError(f"setting 'variables': variables.{name}{problem[0]}: {problem[1]} "
                                  f"(profile {profile.name} declares it {kind.words!r})")
