"""Whole installs: QEMU machines PXE-boot from `provisiond serve` and run the
kickstart it composes in the test installer (see tests/e2e/conftest.py).

Asserted from each machine's serial console, its disk, provisiond's log and
the host's record and timeline through the admin API; never on wall-clock
time (waits are bounded only so a broken boot fails).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.conftest import E2ELab, Machine
from tests.e2e.installer import bootsector
from tests.netboot.test_dhcp_lab import add_host
from tests.netboot.test_qemu_pxe import ADDRESS, PUBLIC_URL

MARKER = b"PROVISIOND-INSTALLED "
KSVALIDATOR = Path(sys.executable).parent / "ksvalidator"


#: What the installed disk's boot sector prints: a banner, then block 1 (the
#: firmware's console wraps it at 80 columns), then a blank line.
BOOTED_FROM_DISK = re.compile(r"provisiond-lab: booting the installed system from disk\n(PROVISIOND-INSTALLED .*?)\n\n",
                              re.DOTALL)


def installed(vm: Machine) -> tuple[dict[str, str], str]:
    """What the installer left on the disk: the marker's fields and the
    kickstart it ran (block 0: the boot sector, block 1: the marker, then
    the kickstart from block 2; see installer/ks-run)."""
    head = vm.disk_head(1 << 20)
    assert head[:512] == bootsector.build(), head[:512]
    block = head[512:1024]
    assert block.startswith(MARKER), block[:120]
    fields = dict(word.split("=", 1) for word in block.split(b"\n", 1)[0].decode().split()[1:])
    kickstart = head[1024:1024 + int(fields["bytes"])]
    assert hashlib.sha256(kickstart).hexdigest()[:16] == fields["kickstart"], fields
    return fields, kickstart.decode()


def booted_from_disk(console: str) -> str | None:
    """The marker line the installed disk's boot sector printed, if it did."""
    found = BOOTED_FROM_DISK.search(console)
    return found.group(1).replace("\n", "") if found else None


def host(client: Any, auth: dict[str, str], serial: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/hosts/{serial}", headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def timeline(client: Any, auth: dict[str, str], serial: str) -> list[tuple[str, str]]:
    response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
    assert response.status_code == 200, response.get_json()
    return [(e["kind"], e["message"]) for e in response.get_json()["events"]]


def arm(client: Any, auth: dict[str, str], serial: str) -> None:
    """Arm through the admin API as an operator would: no BMC, no power action."""
    response = client.post(f"/api/v1/hosts/{serial}/install", json={}, headers=auth)
    assert response.status_code == 201, response.get_json()


def test_install_runs_once_then_the_machine_boots_locally(e2e: E2ELab, client: Any, auth: dict[str, str]) -> None:
    vm = e2e.machine("SN-E2E-21", "52:54:00:77:02:21", memory_mib=512, cpus=2)
    # The record knows the serial and the CPU count; memory is learned from the report: what the
    # firmware lists as installed (QEMU's SMBIOS memory device), not the kernel's smaller MemTotal.
    add_host(client, auth, vm.serial, vm.mac, ip="10.77.0.21", prefix=24, gateway=ADDRESS,
             hardware={"cpus": vm.cpus})
    arm(client, auth, vm.serial)

    # First power-on: PXE → iPXE script → kernel + initrd → kickstart → %pre → disk → %post → reboot.
    vm.boot()
    console = vm.wait()
    assert vm.exited, f"the machine did not finish its install:\n{console}"
    assert f"Filename: {PUBLIC_URL}/boot/ipxe/{vm.mac}" in console, console
    assert f"inst.ks={PUBLIC_URL}/install/" in console, console  # the kernel's command line
    assert f"provisiond: reporting hardware: serial {vm.serial}, 2 CPUs, {vm.memory_mib} MiB (smbios)" in console, \
        console
    assert "provisiond: install slot granted" in console, console
    assert f"provisiond-installer: installed: PROVISIOND-INSTALLED serial={vm.serial} " in console, console
    assert "provisiond-installer: running %post script" in console, console
    # post-agent fetched the program, its CA, a configuration with a ticket and the unit from provisiond
    assert "provisiond: provisiond-agent installed; it enrolls on the first boot" in console, console
    assert "exited with status" not in console, console  # every %post section succeeded
    assert "provisiond-installer: installation complete" in console, console
    assert "provisiond-installer: rebooting" in console, console
    assert "installation halted" not in console, console
    record = host(client, auth, vm.serial)
    assert (record["state"], record["state_reason"]) == ("installed", None), record
    memory = record["hardware"]["memory_mib"]
    assert memory == vm.memory_mib, record  # learned: installed, as the firmware lists it
    assert record["hardware"]["manufacturer"] == "QEMU-Lab", record
    marker, kickstart = installed(vm)
    assert marker["serial"] == vm.serial, marker
    # It ran the kickstart provisiond composed for this host, and that passes Anaconda's parser.
    assert f"(serial {vm.serial}), profile default" in kickstart, kickstart
    assert "%pre --interpreter=/bin/sh --erroronfail" in kickstart and "/done" in kickstart, kickstart
    assert KSVALIDATOR.exists(), f"ksvalidator not installed next to {sys.executable} (pip install pykickstart)"
    ks_file = e2e.folder / "installed.ks"
    ks_file.write_text(kickstart)
    checked = subprocess.run([str(KSVALIDATOR), "-e", "-v", "RHEL9", str(ks_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    disk = vm.disk_head(1 << 20)
    events = timeline(client, auth, vm.serial)
    kinds = [kind for kind, _ in events]
    assert [k for k in kinds if k in ("kickstart", "hardware", "slot", "installed")] == \
        ["kickstart", "hardware", "slot", "installed"], events
    assert any(kind == "hardware" and "learned" in m and "expected_memory_mib" in m for kind, m in events), events

    # Second power-on: the PXE answer is now local boot; no installer, no second install.
    vm.boot()
    console = vm.wait(until=booted_from_disk)
    assert f"provisiond: local boot (host {vm.serial} is installed" in console, console
    assert "Booting from Hard Disk" in console, console  # the BIOS went on to the disk
    assert booted_from_disk(console) == disk[512:1024].split(b"\n")[0].decode(), console  # and booted it
    assert "Linux version" not in console and "provisiond-installer" not in console, console
    assert vm.disk_head(1 << 20) == disk  # what the one install wrote, untouched
    record = host(client, auth, vm.serial)
    assert record["state"] == "installed", record
    after = timeline(client, auth, vm.serial)
    assert [k for k, _ in after].count("installed") == 1, after
    assert [k for k, _ in after].count("kickstart") == 1, after
    assert any(kind == "ipxe" and ": local boot (host SN-E2E-21 is installed" in m for kind, m in after), after
    log = e2e.server_log()
    assert f"iPXE script for {vm.mac} from 10.77.0.21: install" in log, log
    assert f"iPXE script for {vm.mac} from 10.77.0.21: local" in log, log


def test_hardware_mismatch_halts_in_pre_and_says_why(e2e: E2ELab, client: Any, auth: dict[str, str]) -> None:
    vm = e2e.machine("SN-E2E-22X", "52:54:00:77:02:22", memory_mib=512, cpus=1)
    # The data source expects another serial for this MAC (seed 004: "Wrong SN").
    add_host(client, auth, "SN-E2E-22", vm.mac, ip="10.77.0.22", prefix=24, gateway=ADDRESS,
             hardware={"cpus": 1})
    arm(client, auth, "SN-E2E-22")

    vm.boot()
    console = vm.wait()
    assert vm.exited, f"the machine did not halt:\n{console}"
    assert "provisiond: reporting hardware: serial SN-E2E-22X, 1 CPUs, " in console, console
    reason = ("provisiond: hardware check failed (409): hardware does not match the data source: wrong serial "
              "number: the machine reports SN-E2E-22X, the data source expects SN-E2E-22")
    assert reason in console, console
    assert "with --erroronfail" in console, console
    assert "provisiond-installer: running %onerror script" in console, console
    assert "provisiond-installer: installation halted: a %pre script with --erroronfail failed" in console, console
    assert "provisiond-installer: powering off" in console, console
    assert "install slot granted" not in console and "PROVISIOND-INSTALLED" not in console, console
    assert "running %post" not in console, console
    assert vm.disk_head() == bytes(512)  # nothing was installed
    record = host(client, auth, "SN-E2E-22")
    assert (record["state"], record["state_reason"]) == ("failed", "hw_mismatch"), record
    events = timeline(client, auth, "SN-E2E-22")
    assert any(kind == "hardware" and "wrong serial number" in m for kind, m in events), events
    assert not any(kind in ("slot", "installed") for kind, _ in events), events
    logged = e2e.provctl("log", "SN-E2E-22").stdout  # what the operator reads
    assert "wrong serial number: the machine reports SN-E2E-22X, the data source expects SN-E2E-22" in logged, logged
    assert "failed (hw_mismatch)" in logged or "hw_mismatch" in logged, logged
