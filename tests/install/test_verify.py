"""Hardware verification: every difference in plain words; unknown fields learned."""

from types import MappingProxyType

import pytest

from provisiond.errors import ValidationError
from provisiond.install.verify import compare, parse_report
from provisiond.inventory.records import Disk, HostRecord, Nic


def record(**changes) -> HostRecord:
    values = dict(serial="712DM2X", hostname="db01", profile="default",
                  nics=(Nic("00:26:b9:35:e9:aa", "eth0", True), Nic("00:26:b9:35:e9:ab")),
                  cpus=16, memory_mib=65536, disks=(Disk("sda", 600),), variables=MappingProxyType({}))
    values.update(changes)
    return HostRecord(**values)


def report(**changes):
    body = {"serial": "712DM2X", "manufacturer": "Dell Inc.", "model": "PowerEdge R710", "cpus": 16,
            "memory_mib": 64300, "boot_mac": "00:26:B9:35:E9:AA",
            "disks": [{"name": "sda", "size_gb": 599, "model": "PERC"}],
            "nics": [{"name": "eth0", "mac": "00:26:b9:35:e9:aa", "link": True}]}
    body.update(changes)
    return parse_report(body)


def test_matching_hardware_passes_within_tolerance():
    verdict = compare(record(), report())
    assert verdict.ok
    assert verdict.learned == {"manufacturer": "Dell Inc.", "model": "PowerEdge R710"}


def test_every_difference_is_named():
    verdict = compare(record(), report(serial="712dm2y", cpus=8, memory_mib=32768, boot_mac="52:54:00:00:00:99",
                                       disks=[{"name": "sda", "size_gb": 240}]))
    text = " | ".join(verdict.differences)
    assert len(verdict.differences) == 5
    assert "wrong serial number: the machine reports 712dm2y, the data source expects 712DM2X" in text
    assert "booted from MAC 52:54:00:00:00:99" in text
    assert "CPU count: the machine has 8, the data source expects 16" in text
    assert "memory: the machine has 32768 MiB" in text
    assert "disk sda 600 GB expected, not found" in text


def test_serial_compare_ignores_case():
    assert compare(record(serial="712DM2Y"), report(serial="712dm2y")).ok


def test_without_boot_mac_some_nic_must_belong():
    assert compare(record(), report(boot_mac=None)).ok
    verdict = compare(record(), report(boot_mac=None, nics=[{"mac": "52:54:00:00:00:09"}]))
    assert "none of the reported NICs" in verdict.differences[0]


def test_unset_expectations_are_learned_not_checked():
    verdict = compare(record(cpus=None, memory_mib=None, disks=None), report(cpus=3, memory_mib=100, memory_source="smbios"))
    assert verdict.ok
    assert verdict.learned["expected_cpus"] == 3
    assert verdict.learned["expected_memory_mib"] == 100
    assert verdict.learned["expected_disks"] == [{"name": "sda", "size_gb": 599, "model": "PERC"}]


def test_unnamed_expected_disk_matches_by_size():
    assert compare(record(disks=(Disk(None, 600), Disk(None, 600))),
                   report(disks=[{"name": "sda", "size_gb": 600}, {"name": "sdb", "size_gb": 598}])).ok
    assert not compare(record(disks=(Disk(None, 600), Disk(None, 600))),
                       report(disks=[{"name": "sda", "size_gb": 600}])).ok


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"serial": ""}, "serial"),
        ({"serial": "x", "cpus": "many"}, "cpus"),
        ({"serial": "x", "disks": "sda"}, "disks"),
        ({"serial": "x", "nics": [{"mac": "nope"}]}, "nics[0].mac"),
        ({"serial": "x", "colour": 1}, "colour"),
        ({"serial": "x", "boot_mac": "zz"}, "boot_mac"),
    ],
)
def test_bad_reports_name_the_field(body, field):
    with pytest.raises(ValidationError) as info:
        parse_report(body)
    assert info.value.field == field


@pytest.mark.parametrize(("expected", "reported", "source", "ok"), [
    (1024, 960, "meminfo", True),      # the 1 GiB machine: MemTotal is 6 % short
    (512, 457, "meminfo", True),       # and 512 MiB: 11 % short
    (65536, 64300, "meminfo", True),
    (65536, 61440, "meminfo", False),  # 64 GiB with a 4 GiB DIMM missing
    (1024, 600, "meminfo", False),
    (1024, 1100, "meminfo", False),    # more than is installed cannot be MemTotal
    (512, 512, "smbios", True),
    (65536, 65536, "smbios", True),
    (64000, 65536, "smbios", True),    # recorded in GB, installed in GiB
    (1024, 960, "smbios", False),      # a DIMM list is exact: 960 installed is not 1 GiB
    (65536, 61440, "smbios", False),
])
def test_memory_is_compared_with_what_is_installed(expected, reported, source, ok):
    verdict = compare(record(memory_mib=expected), report(memory_mib=reported, memory_source=source))
    assert verdict.ok == ok, verdict.differences
    if not ok:
        assert ("installed" if source == "smbios" else "MemTotal") in verdict.differences[0]


def test_an_older_kickstart_without_a_source_is_read_as_memtotal():
    assert compare(record(memory_mib=1024), report(memory_mib=960)).ok


def test_memory_is_learned_only_from_the_firmwares_list():
    assert compare(record(memory_mib=None), report(memory_mib=512, memory_source="smbios")).learned[
        "expected_memory_mib"] == 512
    assert "expected_memory_mib" not in compare(record(memory_mib=None), report(memory_mib=457)).learned
    with pytest.raises(ValidationError, match="memory_source"):
        report(memory_source="guess")
