"""The power driver interface, its typed errors and the driver registry.

A driver speaks to one BMC (or, for Wake-on-LAN, to one NIC). It is built
per operation from a :class:`Target` and answers the six calls below; what a
driver cannot do it refuses with :class:`Unsupported`, saying so. Drivers are
found by name (the host's ``bmc.type``) among the built-in ones and the
``provisiond.power_drivers`` entry points, so a new driver (Redfish, say) is a
module and an entry point, with no change elsewhere.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from typing import ClassVar

from provisiond.errors import ProvisiondError


class Power(enum.StrEnum):
    ON = "on"
    OFF = "off"


class BootDevice(enum.StrEnum):
    PXE = "pxe"
    DISK = "disk"
    #: The BIOS's own order (what an IPMI BMC reports with no override set).
    DEFAULT = "default"


@dataclass(frozen=True)
class BootSetting:
    device: BootDevice
    persistent: bool

    def __str__(self) -> str:
        return f"{self.device} ({'persistent' if self.persistent else 'next boot only'})"


@dataclass(frozen=True)
class Target:
    """What a driver needs to reach one machine's BMC. ``password`` never
    appears in ``repr`` (tracebacks, logs)."""

    serial: str
    type: str
    address: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    #: The host's primary MAC (Wake-on-LAN).
    mac: str | None = None

    @property
    def bmc(self) -> str:
        """How messages name the BMC: ``ipmi 10.0.0.5:623`` / ``wol 52:54:00:..``."""
        where = self.address or self.mac or self.serial
        return f"{self.type} {where}:{self.port}" if self.port else f"{self.type} {where}"

    @property
    def key(self) -> str:
        """One key per physical BMC: operations with the same key are serialized."""
        return f"{self.type}:{self.address or self.mac or self.serial}:{self.port or ''}"


@dataclass(frozen=True)
class DriverOptions:
    """Settings every driver may use."""

    #: Where the fake driver keeps its BMCs' state.
    state_dir: str = ""
    #: Wake-on-LAN: send on this interface (raw Ethernet), else a UDP broadcast.
    wol_interface: str = ""
    wol_broadcast: str = "255.255.255.255"
    wol_port: int = 9


# --------------------------------------------------------------------------- errors


class BmcError(ProvisiondError):
    """A BMC operation failed. Names the BMC and the operation."""

    status = 502
    code = "bmc_error"
    #: Worth another attempt (a timeout, a busy BMC); a wrong password is not.
    retryable: ClassVar[bool] = True

    def __init__(self, target: Target, operation: str, problem: str) -> None:
        super().__init__(f"BMC {target.bmc} (host {target.serial}): {operation}: {problem}",
                         bmc=target.bmc, operation=operation)
        self.problem = problem


class Unreachable(BmcError):
    """The BMC did not answer in time."""

    status = 504
    code = "bmc_unreachable"


class AuthFailed(BmcError):
    """The BMC refused the user name or password."""

    code = "bmc_auth_failed"
    retryable = False


class Unsupported(BmcError):
    """The driver cannot do this (Wake-on-LAN cannot power off)."""

    status = 422
    code = "bmc_unsupported"
    retryable = False


class NoBmc(ProvisiondError):
    """The host has no BMC (or Wake-on-LAN) in the data source."""

    status = 409
    code = "no_bmc"


# --------------------------------------------------------------------------- the interface


class PowerDriver(ABC):
    """One BMC. Each call is one attempt; retries, pacing and timeouts
    around it are the worker's (:mod:`provisiond.power.bmc`)."""

    #: The ``bmc.type`` this driver serves.
    name: ClassVar[str]
    #: False for drivers that cannot choose the boot device (Wake-on-LAN).
    sets_boot_device: ClassVar[bool] = True

    def __init__(self, target: Target, options: DriverOptions) -> None:
        self.target = target
        self.options = options

    @abstractmethod
    def power_status(self) -> Power: ...

    @abstractmethod
    def power_on(self) -> None: ...

    @abstractmethod
    def power_off(self) -> None: ...

    @abstractmethod
    def power_reset(self) -> None:
        """A hard reset of a machine that is on."""

    def power_boot(self) -> str:
        """Start the machine afresh: reset it if it is on, power it on if it is
        off (one command to the BMC: a read and a control, back to back).
        Returns what was done."""
        if self.power_status() == Power.ON:
            self.power_reset()
            return "reset"
        self.power_on()
        return "was off: powered on"

    @abstractmethod
    def set_boot_device(self, device: BootDevice, persistent: bool) -> None: ...

    @abstractmethod
    def get_boot_device(self) -> BootSetting: ...

    def close(self) -> None:
        """End the session with the BMC (if the driver keeps one)."""

    def unsupported(self, operation: str, why: str) -> Unsupported:
        return Unsupported(self.target, operation, why)


# --------------------------------------------------------------------------- the registry

#: Built-in drivers: bmc.type → module:class.
BUILTIN = {
    "ipmi": "provisiond.power.ipmi:IpmiDriver",
    "wol": "provisiond.power.wol:WolDriver",
    "fake": "provisiond.power.fake:FakeDriver",
}
ENTRY_POINT_GROUP = "provisiond.power_drivers"


@cache
def _known() -> dict[str, str]:
    found = dict(BUILTIN)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(point.name, point.value)
    return found


def driver_names() -> tuple[str, ...]:
    return tuple(sorted(_known()))


@cache
def driver_class(kind: str) -> type[PowerDriver]:
    where = _known().get(kind)
    if where is None:
        raise ProvisiondError(f"no power driver for BMC type {kind!r} (known: {', '.join(driver_names())})")
    module, _, name = where.partition(":")
    cls = getattr(import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, PowerDriver)):
        raise ProvisiondError(f"power driver {where} for {kind!r} is not a PowerDriver")
    return cls


def driver_for(target: Target, options: DriverOptions) -> PowerDriver:
    return driver_class(target.type)(target, options)
