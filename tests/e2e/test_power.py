"""Whole installs driven through the machines' BMCs, as an operator runs them.

Each machine has its own ipmi_sim whose chassis program starts, stops and
resets that machine's QEMU process, and whose boot device is the firmware's
boot order (tests/e2e/chassis.sh). provctl runs in the lab's namespace
against `provisiond serve`; provisiond's power worker speaks IPMI to the
BMCs. Every scenario is asserted from provisiond (API, events, log), from
what each BMC was told (its chassis program's record, ipmitool) and from
the machines' serial consoles; never on wall-clock time (waits are bounded
only so a broken run fails). The heavy scenarios run on one database each
(``db_url`` parametrized); the happy path runs on both.

Set PROVISIOND_E2E_FIGURES=FILE to collect the figures (install times and
provisiond's CPU time) as JSON lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import BOOT_WAIT, E2ELab, Machine
from tests.e2e.test_install import booted_from_disk, host, installed, timeline
from tests.netboot.test_dhcp_lab import add_host
from tests.netboot.test_qemu_pxe import ADDRESS, PUBLIC_URL

RETRY_LINE = re.compile(r"provisiond: concurrent install limit 1 reached: position (\d+), retry in (\d+) s")
PLAN = "power     ipmi 127.0.0.1: boot device PXE (next boot only), then reset (power on if off)"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
POSTGRESQL_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


# --------------------------------------------------------------------------- helpers


def figure(scenario: str, **values: Any) -> None:
    """Record a figure for the README (PROVISIOND_E2E_FIGURES: a JSON-lines file)."""
    line = json.dumps({"scenario": scenario, **values})
    print(line)
    target = os.environ.get("PROVISIOND_E2E_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


def utc(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def events(client: Any, auth: dict[str, str], serial: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["events"])


def kinds(client: Any, auth: dict[str, str], serial: str) -> list[str]:
    return [kind for kind, _ in timeline(client, auth, serial)]


def install_record(client: Any, auth: dict[str, str], serial: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/hosts/{serial}/install", headers=auth)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json()["install"])


def status(client: Any, auth: dict[str, str]) -> dict[str, Any]:
    response = client.get("/api/v1/status", headers=auth)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def power_operations(client: Any, auth: dict[str, str], serial: str, count: int,
                     timeout: float = 60) -> list[dict[str, Any]]:
    """The host's power operations, oldest first, once ``count`` of them exist
    and all have ended (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/hosts/{serial}/power", headers=auth)
        ops = list(reversed(response.get_json()["operations"]))
        if len(ops) >= count and all(op["status"] in ("done", "failed") for op in ops):
            return ops
        assert time.monotonic() < deadline, f"power operations of {serial} did not end: {ops}"
        time.sleep(0.2)


def add_machine(client: Any, auth: dict[str, str], vm: Machine, last_octet: int) -> None:
    assert vm.bmc is not None
    add_host(client, auth, vm.serial, vm.mac, ip=f"10.77.0.{last_octet}", prefix=24, gateway=ADDRESS,
             hardware={"cpus": vm.cpus}, bmc=vm.bmc.record())


def slow_installs(e2e: E2ELab, seconds: int) -> None:
    """The served profile's installs take ``seconds`` more (the test
    installer's knob, a long package install); provisiond re-reads it."""
    path = e2e.server.profiles / "default.yaml"
    profile = yaml.safe_load(path.read_text())
    profile["kernel_args"] = f"{profile['kernel_args']} provisiond.e2e_install_seconds={seconds}"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = BOOT_WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s for {what}"
        time.sleep(0.5)


def boot_flags(vm: Machine) -> str:
    assert vm.bmc is not None
    return vm.bmc.ipmitool("chassis", "bootparam", "get", "5")


# --------------------------------------------------------------------------- scenarios


def test_provctl_install_through_the_bmc_then_the_machine_boots_from_disk(
        e2e: E2ELab, client: Any, auth: dict[str, str], db_url: str) -> None:
    vm = e2e.machine("SN-E2E-31", "52:54:00:77:03:31", memory_mib=512, cpus=2, bmc=True)
    add_machine(client, auth, vm, 31)
    assert vm.bmc is not None and not vm.running()

    # One command: arm, PXE once + power on through IPMI, follow to the end.
    cpu_before, started = e2e.server.cpu_seconds(), time.monotonic()
    run = e2e.provctl("install", vm.serial, "--yes", "--timeout", str(BOOT_WAIT), timeout=BOOT_WAIT + 30)
    took, cpu = time.monotonic() - started, e2e.server.cpu_seconds() - cpu_before
    figure("happy path", database=db_url.split(":")[0], machine=vm.serial, install_to_installed_s=round(took, 1),
           provisiond_cpu_s=round(cpu, 2))
    print(run.stdout)
    assert PLAN in run.stdout, run.stdout
    lines = run.stdout.splitlines()
    assert lines[-1] == f"{vm.serial} is installed", run.stdout
    # The timeline, as it happened: arm, the BMC's PXE + power-on, PXE, kickstart, hardware, slot, done.
    expected = ["> install armed by token tests, profile default",
                "> operation 1: boot from the network once (boot device pxe for the next boot, then reset or power "
                "on): boot device pxe (next boot only), then was off: powered on (BMC ipmi 127.0.0.1:",
                f"> iPXE: served the boot script to 10.77.0.31: installer entry (host {vm.serial} is armed",
                "> installer fetched its kickstart (profile default) from 10.77.0.31",
                f"> hardware matches the data source: serial {vm.serial}, 2 CPUs,",
                "> install slot granted (1 of 55 in use)",
                "> install done: slot freed, token revoked, PXE answer is now local boot"]
    found = [next((n for n, line in enumerate(lines) if text in line), -1) for text in expected]
    assert -1 not in found and found == sorted(found), (found, run.stdout)

    console = vm.wait()  # the installer reboots: with -no-reboot the machine is then off
    assert vm.exited and vm.boots == 1, console
    assert f"Filename: {PUBLIC_URL}/boot/ipxe/{vm.mac}" in console, console
    assert "provisiond: install slot granted" in console, console
    assert "provisiond-installer: installation complete" in console, console
    assert "provisiond-installer: rebooting" in console, console
    record = host(client, auth, vm.serial)
    assert (record["state"], record["state_reason"]) == ("installed", None), record
    marker, _ = installed(vm)
    assert marker["serial"] == vm.serial, marker

    # The BMC: PXE for the next boot, then on (it was off); after done, disk for good.
    ops = power_operations(client, auth, vm.serial, 2)
    assert [(op["argument"], op["status"], op["result"]) for op in ops] == [
        ("netboot", "done", "boot device pxe (next boot only), then was off: powered on"),
        ("disk", "done", "disk (persistent)")], ops
    assert vm.bmc.sets() == [("boot", "pxe"), ("power", "1"), ("boot", "default")], vm.bmc.calls()
    assert "Boot Device Selector : Force Boot from default Hard-Drive" in boot_flags(vm)
    assert e2e.provctl("power", vm.serial, "status").stdout == f"{vm.serial}: off\n"

    # Powered on again through provisiond: the firmware boots the disk the
    # installer wrote, and never asks the network.
    before = timeline(client, auth, vm.serial)
    assert e2e.provctl("power", vm.serial, "on").stdout == f"{vm.serial}: powered on\n"
    vm.wait_for_power_on(2)
    console = vm.wait_until(booted_from_disk)
    assert booted_from_disk(console) == vm.disk_head(1024)[512:].split(b"\n")[0].decode(), console
    assert "Booting from Hard Disk" in console and "iPXE initialising devices" not in console, console
    assert "Linux version" not in console and "provisiond-installer" not in console, console
    since = timeline(client, auth, vm.serial)[len(before):]
    assert [kind for kind, _ in since] == ["power", "power"], since  # the power-on, and nothing from the boot
    assert since[1][1].startswith("operation ") and ": power on: powered on (BMC ipmi 127.0.0.1:" in since[1][1]

    # Told to boot from the network and reset (an operator's `bootdev pxe` +
    # `power reset`): the machine restarts, PXE-boots, provisiond's live
    # answer is local boot, and the firmware goes on to the disk. No second install.
    assert e2e.provctl("bootdev", vm.serial, "pxe").stdout == f"{vm.serial}: pxe (next boot only)\n"
    assert e2e.provctl("power", vm.serial, "reset").stdout == f"{vm.serial}: reset\n"
    vm.wait_for_power_on(3)
    console = vm.wait_until(booted_from_disk)
    assert f"provisiond: local boot (host {vm.serial} is installed" in console, console
    assert "Linux version" not in console and "provisiond-installer" not in console, console
    assert e2e.provctl("power", vm.serial, "off").stdout == f"{vm.serial}: powered off\n"
    assert not vm.running()
    assert e2e.provctl("power", vm.serial, "status").stdout == f"{vm.serial}: off\n"
    assert vm.bmc.sets()[3:] == [("power", "1"), ("boot", "pxe"), ("reset", "1"), ("power", "0")], vm.bmc.calls()

    seen = kinds(client, auth, vm.serial)
    assert seen.count("kickstart") == 1 and seen.count("installed") == 1, seen
    assert host(client, auth, vm.serial)["state"] == "installed"
    log = e2e.provctl("log", vm.serial).stdout
    assert "local boot" in log, log


@POSTGRESQL_ONLY
@pytest.mark.parametrize("e2e_env", [{"install_cap": "1", "slot_retry_seconds": "2"}])
def test_a_cap_of_one_installs_three_machines_one_after_another(
        e2e: E2ELab, client: Any, auth: dict[str, str], db_url: str) -> None:
    slow_installs(e2e, 15)  # each install holds the slot long enough for the others to queue behind it
    machines = [e2e.machine(f"SN-E2E-4{i}", f"52:54:00:77:04:4{i}", memory_mib=384, bmc=True) for i in range(3)]
    for i, vm in enumerate(machines):
        add_machine(client, auth, vm, 40 + i)
    serials = e2e.folder / "rack.txt"
    serials.write_text("# the rack\n" + "".join(f"{vm.serial}\n" for vm in machines))

    cpu_before, started_at = e2e.server.cpu_seconds(), dt.datetime.now(dt.timezone.utc)
    run = e2e.provctl("install", "--file", str(serials), "--yes", "--timeout", str(2 * BOOT_WAIT),
                      timeout=2 * BOOT_WAIT + 30)
    cpu = e2e.server.cpu_seconds() - cpu_before
    assert run.stdout.splitlines()[-1] == "all 3 hosts are installed", run.stdout
    consoles = {vm.serial: vm.wait() for vm in machines}
    assert all(vm.exited for vm in machines), consoles

    installs = {vm.serial: install_record(client, auth, vm.serial) for vm in machines}
    for vm in machines:
        assert host(client, auth, vm.serial)["state"] == "installed", vm.serial
        assert installs[vm.serial]["outcome"] == "installed", installs
        finished = utc(installs[vm.serial]["finished_at"])
        figure("cap of 1, 3 machines", database="postgresql", machine=vm.serial,
               install_to_installed_s=round((finished - started_at).total_seconds(), 1))
    figure("cap of 1, 3 machines", database="postgresql", provisiond_cpu_s=round(cpu, 2))

    # Never two installing at once: each slot was granted after the previous install ended,
    # first come (queued) first served.
    order = sorted(installs, key=lambda s: utc(installs[s]["slot_granted_at"]))
    for first, then in zip(order, order[1:]):
        assert utc(installs[first]["finished_at"]) <= utc(installs[then]["slot_granted_at"]), installs
    # FIFO among those that waited. The first one was granted on arrival: a rival arriving in the same
    # millisecond may carry an earlier queued_at (its request's time) yet was not queued when the grant
    # was decided, so it does not count as jumped.
    times = {s: (installs[s]["queued_at"], installs[s]["slot_granted_at"]) for s in order}
    assert order[1:] == sorted(order[1:], key=lambda s: utc(installs[s]["queued_at"])), times
    # The second and the third waited, with the server's 429 answers on their consoles.
    for serial in order[1:]:
        retries = RETRY_LINE.findall(consoles[serial])
        assert retries, consoles[serial]
        # Retry-After grows with the place in the queue: 1 s at its head, the setting's 2 s behind.
        assert all((position, wait) in (("1", "1"), ("2", "2")) for position, wait in retries), retries
        assert consoles[serial].index("concurrent install limit") < consoles[serial].index("slot granted")
    # The third in line stood behind the second for a while: position 2.
    assert ("2", "2") in RETRY_LINE.findall(consoles[order[2]]), consoles[order[2]]
    body = json.loads(e2e.provctl("status", "--json").stdout)  # the server's own view (its cap)
    assert (body["cap"], body["in_use"], body["waiting"]) == (1, 0, 0), body
    # The server's word for it: each grant found the slot free ("1 of 1 in use": its own);
    # the waiters were queued first, with the 429's reason.
    for serial in order:
        slot_events = [message for kind, message in timeline(client, auth, serial) if kind == "slot"]
        assert slot_events[-1].startswith("install slot granted (1 of 1 in use)"), slot_events
        if serial == order[0]:
            assert len(slot_events) == 1, slot_events
        else:
            assert len(slot_events) == 2, slot_events
            assert slot_events[0].startswith("concurrent install limit 1 reached: position "), slot_events
    for vm in machines:
        assert vm.bmc is not None
        assert vm.bmc.sets() == [("boot", "pxe"), ("power", "1"), ("boot", "default")], vm.bmc.calls()


@SQLITE_ONLY
def test_an_unknown_mac_gets_no_answer_and_no_installer(e2e: E2ELab, client: Any, auth: dict[str, str]) -> None:
    """unknown_mac is "ignore" (the default): DHCP stays silent, iPXE gives up,
    the firmware goes on to the (blank) disk. Nothing is installed, nothing
    is recorded but the log lines saying why."""
    mac = "52:54:00:77:05:50"
    vm = e2e.machine("SN-E2E-UNKNOWN", mac)
    vm.boot()
    console = vm.wait(until=lambda text: "No bootable device" in text)
    assert f"Configuring (net0 {mac})" in console and "No configuration methods" in console, console
    assert "Filename:" not in console and "Next server:" not in console, console  # no DHCP answer at all
    assert "Boot failed: not a bootable disk" in console and "No bootable device" in console, console
    assert "Linux version" not in console and "provisiond-installer" not in console, console
    log = e2e.server_log()
    about = [line for line in log.splitlines() if mac in line]
    ignored = f"DHCPDISCOVER from {mac} via br0 port 67: ignored (MAC {mac} is not in the data source)"
    assert about and all(ignored in line for line in about), about
    hosts = client.get("/api/v1/hosts", headers=auth).get_json()
    assert hosts["hosts"] == [], hosts
    assert status(client, auth)["hosts"] == 0


@SQLITE_ONLY
def test_a_server_killed_mid_install_and_restarted_finishes_it(
        e2e: E2ELab, client: Any, auth: dict[str, str]) -> None:
    slow_installs(e2e, 20)  # a long "package install": the window for the kill and the restart
    vm = e2e.machine("SN-E2E-61", "52:54:00:77:06:61", memory_mib=512, bmc=True)
    add_machine(client, auth, vm, 61)
    armed = client.post(f"/api/v1/hosts/{vm.serial}/install", json={"power": True}, headers=auth)
    assert armed.status_code == 201, armed.get_json()

    vm.wait_for_power_on(1)
    vm.wait_until(lambda text: "provisiond-installer: installing packages" in text)
    assert host(client, auth, vm.serial)["state"] == "installing"
    assert status(client, auth)["in_use"] == 1
    history = events(client, auth, vm.serial)

    killed = e2e.server.kill()  # SIGKILL to the server and its HTTP workers, all at once
    assert len(killed) >= 2, killed  # the master and its workers
    e2e.server.start()
    assert "provisiond-installer: packages installed" not in vm.console(), \
        "the server came back after the install step: the kill window was missed (raise the knob)"
    assert host(client, auth, vm.serial)["state"] == "installing"  # nothing lost: the slot is still held
    assert status(client, auth)["in_use"] == 1

    console = vm.wait()
    assert vm.exited and vm.boots == 1, console
    assert "provisiond-installer: installation complete" in console, console
    assert "exited with status" not in console, console  # %post's done reached the restarted server
    record = host(client, auth, vm.serial)
    assert (record["state"], record["state_reason"]) == ("installed", None), record
    after = events(client, auth, vm.serial)
    assert after[:len(history)] == history, "events from before the kill changed"
    seen = [event["kind"] for event in after]
    assert [k for k in seen if k in ("kickstart", "hardware", "slot", "installed")] == \
        ["kickstart", "hardware", "slot", "installed"], seen
    body = status(client, auth)
    assert (body["in_use"], body["waiting"]) == (0, 0), body
    # The restarted server's power worker set the disk after done.
    ops = power_operations(client, auth, vm.serial, 2)
    assert [(op["argument"], op["status"]) for op in ops] == [("netboot", "done"), ("disk", "done")], ops
    assert vm.bmc is not None
    assert vm.bmc.sets() == [("boot", "pxe"), ("power", "1"), ("boot", "default")], vm.bmc.calls()
    assert e2e.server_log().count("serving HTTP on") == 2
