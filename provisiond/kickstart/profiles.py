"""Install profiles: ``profiles/*.yaml``, with inheritance through ``extends:``.

A profile names the OS and its install tree, the kernel and initrd, the
ordered kickstart fragments, variables, and hand-off jobs::

    name: web_server
    extends: default
    description: Nginx front end
    variables:
      packages_extra: [nginx]

A child replaces any key it sets; ``variables`` merge (the child's win).
Profiles are re-read when a file in the directory changes: no restart, no
sync step.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from provisiond.errors import NotFound, ProfileError
from provisiond.inventory import fields
from provisiond.kickstart.variable_types import VariableType, declare

PROFILE_KEYS = frozenset(
    "name extends description os ks_version install_tree kernel initrd kernel_args fragments variables "
    "variable_types handoff_jobs".split()
)
REQUIRED = ("os", "ks_version", "install_tree", "kernel", "initrd", "fragments")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    os: str
    #: pykickstart version the rendered kickstart must validate as (RHEL9...).
    ks_version: str
    install_tree: str
    kernel: str
    initrd: str
    kernel_args: str
    fragments: tuple[str, ...]
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: What each variable its fragments use must be (:mod:`.variable_types`).
    types: Mapping[str, VariableType] = field(default_factory=lambda: MappingProxyType({}))
    handoff_jobs: tuple[Any, ...] = ()
    extends: str | None = None
    source: str = ""
    #: The files it is built from: its own first, then what it extends, in order.
    chain: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "extends": self.extends,
            "description": self.description,
            "os": self.os,
            "ks_version": self.ks_version,
            "install_tree": self.install_tree,
            "kernel": self.kernel,
            "initrd": self.initrd,
            "kernel_args": self.kernel_args,
            "fragments": list(self.fragments),
            "variables": dict(self.variables),
            "variable_types": {name: t.spec for name, t in self.types.items()},
            "handoff_jobs": list(self.handoff_jobs),
            "source": self.source,
            "chain": list(self.chain),
        }


class ProfileStore:
    """All profiles of a search path (site directories first, shipped last),
    re-read when any file in it changes. A name found in an earlier
    directory shadows the same name further down."""

    def __init__(self, directories: Path | Sequence[Path]) -> None:
        self.directories = (directories,) if isinstance(directories, Path) else tuple(directories)
        self._lock = threading.Lock()
        self._signature: tuple[Any, ...] | None = None
        self._profiles: dict[str, Profile] = {}
        self._error: ProfileError | None = None

    def all(self) -> dict[str, Profile]:
        signature = self._scan_signature()
        if signature != self._signature:
            with self._lock:
                if signature != self._signature:
                    try:
                        self._profiles, self._error = _load_all(self.directories), None
                    except ProfileError as exc:
                        self._profiles, self._error = {}, exc
                    self._signature = signature
        if self._error is not None:
            raise self._error
        return self._profiles

    def names(self) -> frozenset[str]:
        return frozenset(self.all())

    def get(self, name: str) -> Profile:
        profile = self.all().get(name)
        if profile is None:
            raise NotFound(f"no profile named {name!r}")
        return profile

    def _scan_signature(self) -> tuple[Any, ...]:
        entries: list[Any] = []
        for index, directory in enumerate(self.directories):
            try:
                entries.extend(sorted(
                    (index, e.name, e.stat().st_mtime_ns, e.stat().st_size)
                    for e in os.scandir(directory)
                    if e.name.endswith((".yaml", ".yml"))
                ))
            except OSError as exc:
                raise ProfileError(f"cannot read profiles directory {directory}: {exc.strerror}") from None
        return tuple(entries)


#: One profile file: its data, its path, and its place in the search path.
_Raw = tuple[dict[str, Any], Path]
#: A profile by name and by which of the files of that name (0: the first found).
_Key = tuple[str, int]


def _load_all(directories: Sequence[Path]) -> dict[str, Profile]:
    raw: dict[str, list[_Raw]] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.y*ml")):
            data = _read(path)
            name = data.get("name", path.stem)
            if name != path.stem:
                raise ProfileError(f"{path}: name {name!r} must match the file name {path.stem!r}")
            fields.name(name, "name")
            raw.setdefault(name, []).append((data, path))
    return {name: _resolve((name, 0), raw, ()) for name in raw}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys")
    for key in data:
        if key not in PROFILE_KEYS:
            raise ProfileError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(PROFILE_KEYS))})")
    return data


def _parent_key(key: _Key, parent: str, raw: dict[str, list[_Raw]], path: Path) -> _Key:
    """The profile ``extends: parent`` means: the first of that name in the
    search path, or, for a profile that extends its own name (a site's
    ``default`` built on the shipped one), the next one of that name."""
    name, index = key
    if parent != name:
        if parent not in raw:
            raise ProfileError(f"{path}: extends unknown profile {parent!r}")
        return (parent, 0)
    if index + 1 >= len(raw[name]):
        raise ProfileError(f"{path}: extends {parent!r}, its own name, but no later directory of the profile "
                           f"search path has a profile of that name")
    return (name, index + 1)


def _resolve(key: _Key, raw: dict[str, list[_Raw]], chain: tuple[_Key, ...]) -> Profile:
    name, index = key
    data, path = raw[name][index]
    if key in chain:
        raise ProfileError(f"{path}: profiles extend each other in a loop: "
                           f"{' -> '.join(n for n, _ in chain + (key,))}")
    merged: dict[str, Any] = {}
    parent = data.get("extends")
    inherited: tuple[str, ...] = ()
    if parent is not None:
        base = _resolve(_parent_key(key, parent, raw, path), raw, chain + (key,))
        inherited = base.chain
        merged = base.to_dict()
        merged["variables"] = {**merged["variables"], **(data.get("variables") or {})}
        merged["variable_types"] = {**merged["variable_types"], **(data.get("variable_types") or {})}
    for key_name, value in data.items():
        if key_name not in ("variables", "variable_types") or parent is None:
            merged[key_name] = value
    merged["name"] = name
    merged["extends"] = parent
    for required in REQUIRED:
        if not merged.get(required):
            raise ProfileError(f"{path}: key {required!r} is required (directly or through extends)")
    fragments = merged["fragments"]
    if not isinstance(fragments, list) or not all(isinstance(f, str) and f for f in fragments):
        raise ProfileError(f"{path}: fragments must be a list of fragment names")
    variables = merged.get("variables") or {}
    if not isinstance(variables, dict):
        raise ProfileError(f"{path}: variables must be a mapping")
    for required in ("os", "ks_version", "install_tree", "kernel", "initrd"):
        if not isinstance(merged[required], str):
            raise ProfileError(f"{path}: {required} must be a string")
    types = _types(merged.get("variable_types") or {}, variables, path)
    _check_handoff(merged.get("handoff_jobs"), path)
    return Profile(
        name=name,
        description=str(merged.get("description") or ""),
        os=merged["os"],
        ks_version=merged["ks_version"],
        install_tree=merged["install_tree"].rstrip("/"),
        kernel=merged["kernel"],
        initrd=merged["initrd"],
        kernel_args=str(merged.get("kernel_args") or ""),
        fragments=tuple(fragments),
        variables=MappingProxyType(dict(variables)),
        types=MappingProxyType(types),
        handoff_jobs=tuple(merged.get("handoff_jobs") or ()),
        extends=parent,
        source=str(path),
        chain=(str(path), *inherited),
    )


def _check_handoff(jobs: Any, path: Path) -> None:
    """Hand-off jobs are jobs like any other: each must pass the job checks."""
    from provisiond.errors import ValidationError
    from provisiond.jobs.types import check

    if jobs is None:
        return
    if not isinstance(jobs, list):
        raise ProfileError(f"{path}: handoff_jobs must be a list of jobs ({{type: ..., payload: {{...}}}})")
    for number, job in enumerate(jobs, 1):
        try:
            check(job, 600)
        except ValidationError as exc:
            raise ProfileError(f"{path}: handoff_jobs[{number}]: {exc.message}") from None


def _types(declared: Any, variables: Mapping[str, Any], path: Path) -> dict[str, VariableType]:
    """The profile's variable types, compiled; its own values must fit them."""
    if not isinstance(declared, dict):
        raise ProfileError(f"{path}: variable_types must be a mapping of variable names to types")
    types = {str(name): declare(str(name), spec, str(path)) for name, spec in declared.items()}
    for name, kind in types.items():
        if name in variables:
            problem = kind.problem(variables[name])
            if problem is not None:
                raise ProfileError(f"{path}: variables.{name}{problem[0]}: {problem[1]}")
    return types
