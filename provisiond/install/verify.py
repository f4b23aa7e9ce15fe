"""Hardware verification: what ``%pre`` reports against the data source.

Pure functions: parse the installer's JSON report into a typed
:class:`HardwareReport`, compare it with a :class:`HostRecord`, and say in
plain words every way they differ. What the record does not know (model,
memory, disks...) is *learned* from the report instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provisiond.errors import ValidationError
from provisiond.inventory import fields
from provisiond.inventory.records import Disk, HostRecord

#: ``memory_mib`` in the data source is the installed physical memory (the
#: sum of the memory devices the firmware lists, as ``dmidecode -t 17``
#: shows them). An installer that could read those (SMBIOS) reports that sum,
#: which may differ from the record by this much (GB written for GiB,
#: vendors' rounding).
MEMORY_TOLERANCE = 0.05
#: An installer that could not reports the kernel's MemTotal, which is less
#: than what is installed: the kernel's own code and page tables and the
#: firmware's reservations take 4-10 % on small machines (1024 MiB shows as
#: 960, 512 as 457) and 1-3 % on large ones. Accepted: from (1 - this) x the
#: expected size minus MEMTOTAL_RESERVE_MIB, up to the tolerance above it.
MEMTOTAL_SHORTFALL = 0.04
MEMTOTAL_RESERVE_MIB = 128
MEMORY_SOURCES = ("smbios", "meminfo")
#: Disk sizes may differ this much (GB vs GiB, vendor rounding).
DISK_TOLERANCE = 0.05


@dataclass(frozen=True)
class ReportedNic:
    mac: str
    name: str | None
    link: bool | None


@dataclass(frozen=True)
class HardwareReport:
    serial: str
    manufacturer: str | None
    model: str | None
    cpus: int | None
    memory_mib: int | None
    disks: tuple[Disk, ...]
    nics: tuple[ReportedNic, ...]
    boot_mac: str | None
    #: Where memory_mib comes from: "smbios" (installed, as the firmware
    #: lists it) or "meminfo" (the kernel's MemTotal; also when an older
    #: kickstart did not say).
    memory_source: str = "meminfo"
    #: The kernel's MemTotal, for the timeline.
    memtotal_mib: int | None = None


REPORT_KEYS = frozenset({"serial", "manufacturer", "model", "cpus", "memory_mib", "memory_source", "memtotal_mib",
                         "disks", "nics", "boot_mac"})


def parse_report(data: Mapping[str, Any]) -> HardwareReport:
    """Validate the ``%pre`` report; a bad field is a 400 naming it."""
    for key in data:
        if key not in REPORT_KEYS:
            raise ValidationError(str(key), f"unknown field (known: {', '.join(sorted(REPORT_KEYS))})")
    serial = fields.text(data.get("serial"), "serial", 128, required=True)
    assert serial is not None
    return HardwareReport(
        serial=serial,
        manufacturer=fields.text(data.get("manufacturer"), "manufacturer"),
        model=fields.text(data.get("model"), "model"),
        cpus=_opt_int(data.get("cpus"), "cpus", 1, 65536),
        memory_mib=_opt_int(data.get("memory_mib"), "memory_mib", 1, 1 << 40),
        disks=tuple(_disk(d, i) for i, d in enumerate(_list(data.get("disks"), "disks"))),
        nics=tuple(_nic(n, i) for i, n in enumerate(_list(data.get("nics"), "nics"))),
        boot_mac=None if not data.get("boot_mac") else fields.mac(data["boot_mac"], "boot_mac"),
        memory_source=_memory_source(data.get("memory_source")),
        memtotal_mib=_opt_int(data.get("memtotal_mib"), "memtotal_mib", 1, 1 << 40),
    )


def _memory_source(value: Any) -> str:
    if value in (None, ""):
        return "meminfo"
    if value not in MEMORY_SOURCES:
        raise ValidationError("memory_source", f"expected one of {', '.join(MEMORY_SOURCES)}")
    return str(value)


def _opt_int(value: Any, field: str, low: int, high: int) -> int | None:
    return None if value is None or value == "" else fields.integer(value, field, low, high)


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(field, "expected a list")
    return value


def _disk(item: Any, index: int) -> Disk:
    where = f"disks[{index}]"
    if not isinstance(item, Mapping):
        raise ValidationError(where, "expected {name, size_gb, model}")
    return Disk(
        name=fields.text(item.get("name"), f"{where}.name", 64),
        size_gb=_opt_int(item.get("size_gb"), f"{where}.size_gb", 0, 10**7),
        model=fields.text(item.get("model"), f"{where}.model"),
    )


def _nic(item: Any, index: int) -> ReportedNic:
    where = f"nics[{index}]"
    if not isinstance(item, Mapping):
        raise ValidationError(where, "expected {mac, name, link}")
    link = item.get("link")
    return ReportedNic(
        mac=fields.mac(item.get("mac"), f"{where}.mac"),
        name=fields.text(item.get("name"), f"{where}.name", 32),
        link=None if link is None else fields.boolean(link, f"{where}.link"),
    )


@dataclass(frozen=True)
class Verdict:
    differences: tuple[str, ...]
    #: Host columns the record lacked, filled from the report.
    learned: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return not self.differences


def compare(record: HostRecord, report: HardwareReport) -> Verdict:
    differences = [
        *_check_serial(record, report),
        *_check_mac(record, report),
        *_check_cpus(record, report),
        *_check_memory(record, report),
        *_check_disks(record, report),
    ]
    return Verdict(tuple(differences), _learned(record, report))


def _check_serial(record: HostRecord, report: HardwareReport) -> list[str]:
    if report.serial.strip().lower() != record.serial.lower():
        return [f"wrong serial number: the machine reports {report.serial}, the data source expects {record.serial}"]
    return []


def _check_mac(record: HostRecord, report: HardwareReport) -> list[str]:
    known = {nic.mac for nic in record.nics}
    if report.boot_mac is not None:
        if report.boot_mac not in known:
            return [f"the machine booted from MAC {report.boot_mac}, which is not one of this host's NICs "
                    f"({', '.join(sorted(known))})"]
        return []
    if not any(nic.mac in known for nic in report.nics):
        return [f"none of the reported NICs ({', '.join(n.mac for n in report.nics) or 'none'}) belongs to this host"]
    return []


def _check_cpus(record: HostRecord, report: HardwareReport) -> list[str]:
    if record.cpus is not None and report.cpus is not None and report.cpus != record.cpus:
        return [f"CPU count: the machine has {report.cpus}, the data source expects {record.cpus}"]
    if record.cpus is not None and report.cpus is None:
        return ["CPU count: the machine did not report it"]
    return []


def _check_memory(record: HostRecord, report: HardwareReport) -> list[str]:
    expected = record.memory_mib
    if expected is None:
        return []
    if report.memory_mib is None:
        return ["memory: the machine did not report it"]
    high = expected * (1 + MEMORY_TOLERANCE)
    if report.memory_source == "smbios":
        low, allowed = expected * (1 - MEMORY_TOLERANCE), f"±{MEMORY_TOLERANCE:.0%}"
        seen = f"{report.memory_mib} MiB installed"
    else:
        low = expected * (1 - MEMTOTAL_SHORTFALL) - MEMTOTAL_RESERVE_MIB
        allowed = f"MemTotal from {low:.0f} to {high:.0f} MiB"
        seen = f"{report.memory_mib} MiB of MemTotal (the firmware's memory list was not readable)"
    if not low <= report.memory_mib <= high:
        return [f"memory: the machine has {seen}, the data source expects {expected} MiB ({allowed})"]
    return []


def _check_disks(record: HostRecord, report: HardwareReport) -> list[str]:
    problems = []
    available = list(report.disks)
    for want in record.disks or ():
        match = next((d for d in available if _disk_matches(want, d)), None)
        if match is None:
            seen = ", ".join(f"{d.name or '?'} {d.size_gb} GB" for d in report.disks) or "none"
            problems.append(f"disk {want.name or ''} {want.size_gb or ''} GB expected, not found (reported: {seen})"
                            .replace("  ", " "))
        else:
            available.remove(match)
    return problems


def _disk_matches(want: Disk, got: Disk) -> bool:
    if want.name and want.name != got.name:
        return False
    if want.size_gb and (got.size_gb is None or abs(got.size_gb - want.size_gb) > want.size_gb * DISK_TOLERANCE):
        return False
    return True


def _learned(record: HostRecord, report: HardwareReport) -> dict[str, Any]:
    learned: dict[str, Any] = {}
    if record.manufacturer is None and report.manufacturer:
        learned["manufacturer"] = report.manufacturer
    if record.model is None and report.model:
        learned["model"] = report.model
    if record.cpus is None and report.cpus:
        learned["expected_cpus"] = report.cpus
    if record.memory_mib is None and report.memory_mib and report.memory_source == "smbios":
        # Only what is installed: MemTotal is less, and learning it would
        # fail the next installer that reads the firmware's list.
        learned["expected_memory_mib"] = report.memory_mib
    if record.disks is None and report.disks:
        learned["expected_disks"] = [{"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in report.disks]
    return learned
