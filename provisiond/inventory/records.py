"""Plain, frozen data: the contract between the data source and every hop.

``HostSpec`` is what an operator says a host is (validated input);
``HostRecord`` adds what provisiond knows about it (state, group variables).
Neither ever holds a BMC secret.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Nic:
    mac: str  # aa:bb:cc:dd:ee:ff
    name: str | None = None  # eth0, eno1...
    primary: bool = False


@dataclass(frozen=True)
class Disk:
    name: str | None = None  # sda, nvme0n1
    size_gb: int | None = None
    model: str | None = None


@dataclass(frozen=True)
class Bmc:
    type: str  # ipmi, wol, fake
    address: str | None = None
    port: int | None = None
    user: str | None = None


@dataclass(frozen=True)
class GroupVars:
    name: str
    priority: int
    variables: Mapping[str, Any]


@dataclass(frozen=True)
class HostSpec:
    serial: str
    hostname: str
    profile: str
    nics: tuple[Nic, ...]
    ip: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    bmc: Bmc | None = None
    manufacturer: str | None = None
    model: str | None = None
    cpus: int | None = None
    memory_mib: int | None = None
    disks: tuple[Disk, ...] | None = None
    os: str | None = None
    owner: str | None = None
    groups: tuple[str, ...] = ()
    site: str | None = None
    rack: str | None = None
    protected: bool = False
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def primary_mac(self) -> str:
        return next((nic.mac for nic in self.nics if nic.primary), self.nics[0].mac)

    @property
    def netmask(self) -> str | None:
        if self.prefix is None:
            return None
        return str(ipaddress.IPv4Network(f"0.0.0.0/{self.prefix}").netmask)


@dataclass(frozen=True)
class HostRecord(HostSpec):
    state: str = "idle"
    state_reason: str | None = None
    has_bmc_secret: bool = False
    #: The host's groups with their variables, lowest priority first.
    group_vars: tuple[GroupVars, ...] = ()
