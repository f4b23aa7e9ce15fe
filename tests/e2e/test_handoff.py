"""Bare metal to READY with no operator (issue 15, section 8).

A QEMU machine PXE-boots from `provisiond run`, and the test installer
installs a real Debian system on its disk (the lab's install media:
``tests/e2e/sysimage.py``) and runs the kickstart's ``%post`` chrooted into
it; ``post-agent`` puts provisiond-agent there. On its second boot (from its
disk) systemd starts the agent, which enrolls with its one-time ticket at the
agent gateway over HTTPS; the host goes HANDED_OFF, runs its profile's
hand-off jobs (a file, a template, a script and a service) and becomes READY;
then ``provctl run`` reaches it. Nobody accepts the agent or runs a job by
hand: after ``provctl install`` the test only powers the machine on (the
installer's reboot ends QEMU, which models the reset) and watches.

Asserted through the admin API (state and timeline), provctl and the
machine's serial console; the waits poll and are bounded only so a broken
boot fails, never fixed sleeps.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from tests.e2e.conftest import E2ELab, Machine
from tests.e2e.sysimage import SystemImage
from tests.netboot.test_qemu_pxe import ADDRESS

SERIAL = "SN-E2E-READY"
MAC = "52:54:00:77:04:41"
IP = "10.77.0.41"
#: Bounds (seconds) on a broken install or boot, never assertions on speed.
INSTALL_WAIT = 300
READY_WAIT = 300

#: A lab profile: the shipped default's kickstart, and hand-off jobs of every
#: kind the agent runs (facts first, as the shipped profiles do).
PROFILE = """\
name: lab-debian
extends: default
description: The lab's Debian system (tests/e2e/test_handoff.py)
handoff_jobs:
  - {type: facts, payload: {}}
  - {type: file, payload: {file: lab-hello.service, dest: /etc/systemd/system/lab-hello.service, mode: "0644"}}
  - {type: template, payload: {file: lab-motd.j2, dest: /etc/motd, mode: "0644",
                               variables: {greeting: handed off with no operator}}}
  - type: script
    payload:
      interpreter: sh
      script: |
        set -e
        systemctl daemon-reload
        mkdir -p /var/lib/provisiond-lab
        echo "script ran on $(hostname) under $(uname -r), init $(cat /proc/1/comm)" > /var/lib/provisiond-lab/script.out
  - {type: service, payload: {action: start, unit: lab-hello.service}}
"""

UNIT = """\
[Unit]
Description=provisiond lab: written by a hand-off file job, started by a service job

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo "lab-hello started by systemd $(systemctl --version | head -n 1)" > /run/lab-hello'
"""

MOTD = "{{ host.serial }} ({{ host.hostname }}, {{ host.ip }}): {{ greeting }}\n"


def host(client: Any, auth: dict[str, str], serial: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/hosts/{serial}", headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def events(client: Any, auth: dict[str, str], serial: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["events"]


def wait_for_state(client: Any, auth: dict[str, str], vm: Machine, state: str, timeout: float) -> dict[str, Any]:
    """Poll the API until the host is ``state``; fail as soon as the machine
    switches off, its hand-off stops, or the time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        record = host(client, auth, vm.serial)
        if record["state"] == state:
            return record
        stopped = [e["message"] for e in events(client, auth, vm.serial)
                   if e["kind"] == "handoff" and e["message"].startswith("hand-off stopped")]
        assert not stopped, f"{stopped}\n{vm.console()}"
        assert vm.running(), f"{vm.serial} switched off while {record['state']}:\n{vm.qemu_errors()}\n{vm.console()}"
        assert time.monotonic() < deadline, \
            f"{vm.serial} still {record['state']} after {timeout} s: {events(client, auth, vm.serial)}\n{vm.console()}"
        time.sleep(0.5)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the flow, once: SQLite is enough
def test_bare_metal_to_ready_with_no_operator(installed_system: SystemImage, e2e: E2ELab, client: Any,
                                              auth: dict[str, str]) -> None:
    # installed_system first: when it must be built, that happens before the lab starts.
    started = time.monotonic()
    # The site's side, before the machine is racked: a profile with hand-off
    # jobs, the files they push, the host's record; then one `provctl install`.
    (e2e.server.profiles / "lab-debian.yaml").write_text(PROFILE)
    for name, text in (("lab-hello.service", UNIT), ("lab-motd.j2", MOTD)):
        path = e2e.folder / name
        path.write_text(text)
        e2e.provctl("files", "put", str(path))
    vm = e2e.machine(SERIAL, MAC, memory_mib=768, cpus=1, system=installed_system)
    e2e.provctl("hosts", "add", "--serial", SERIAL, "--hostname", "ready01.lab.test", "--mac", MAC, "--ip", IP,
                "--prefix", "24", "--gateway", ADDRESS, "--profile", "lab-debian")
    e2e.provctl("install", SERIAL, "--yes", "--no-power", "--no-wait")

    # First power-on: PXE, the installer, Debian copied onto the disk, %post chrooted into it, reboot.
    vm.boot()
    console = vm.wait(timeout=INSTALL_WAIT)
    installed_at = time.monotonic()
    assert vm.exited, f"the machine did not finish its install:\n{console}"
    assert f"provisiond-installer: installed: PROVISIOND-INSTALLED serial={SERIAL} " in console, console
    assert "provisiond-installer: installed system: Debian GNU/Linux 12 (bookworm)" in console, console
    assert "in /mnt/sysimage (interpreter /bin/sh" in console, console  # %post chrooted into the new system
    assert "provisiond: provisiond-agent installed; it enrolls on the first boot" in console, console
    assert "exited with status" not in console and "installation halted" not in console, console
    assert "provisiond-installer: rebooting" in console, console
    assert host(client, auth, SERIAL)["state"] == "installed"

    # Second power-on: the installed system from its disk; from here on nobody acts.
    vm.boot(from_disk=True)
    record = wait_for_state(client, auth, vm, "ready", READY_WAIT)
    ready_at = time.monotonic()
    assert record["state_reason"] is None, record
    console = vm.console()
    assert "Debian GNU/Linux 12" in console, console
    assert "provisiond-installer" not in console, console  # booted from the disk, not the network

    timeline = events(client, auth, SERIAL)
    kinds = [(e["kind"], (e.get("data") or {}).get("state")) for e in timeline]
    moves = [state for kind, state in kinds if state in ("installed", "handed_off", "ready")]
    assert moves == ["installed", "handed_off", "ready"], timeline
    handed_off = next(e for e in timeline if (e.get("data") or {}).get("state") == "handed_off")
    assert "enrolled with the install's ticket" in handed_off["message"], handed_off
    steps = [e["message"] for e in timeline if e["kind"] == "handoff" and e["message"].startswith("hand-off step")]
    assert len(steps) == 5, steps
    for number, what in enumerate(("facts", "file: lab-hello.service → /etc/systemd/system/lab-hello.service",
                                   "template: lab-motd.j2 → /etc/motd", "sh: set -e",
                                   "service: systemctl start lab-hello.service"), start=1):
        assert steps[number - 1].startswith(f"hand-off step {number} of 5: job ") and what in steps[number - 1], steps
    results = [e["message"] for e in timeline if e["kind"] == "job" and "succeeded" in e["message"]]
    assert len(results) == 5, [e["message"] for e in timeline if e["kind"] == "job"]
    ready = next(e for e in timeline if (e.get("data") or {}).get("state") == "ready")
    assert ready["message"] == "hand-off done: 5 job(s) succeeded", ready
    assert timeline.index(handed_off) < timeline.index(ready), timeline

    # What the hand-off left on the host, read back through the agent.
    done = e2e.provctl("run", SERIAL, "--", "cat", "/etc/motd", "/run/lab-hello", "/var/lib/provisiond-lab/script.out",
                       "/etc/systemd/system/lab-hello.service")
    assert done.returncode == 0
    out = done.stdout
    assert out.startswith(f"{SERIAL}: succeeded (exit 0)\n"), out
    assert f"{SERIAL} (ready01.lab.test, {IP}): handed off with no operator" in out, out
    assert "lab-hello started by systemd systemd 252" in out, out
    assert "script ran on " in out and "init systemd" in out, out
    assert UNIT.splitlines()[1] in out, out
    state = e2e.provctl("run", SERIAL, "--", "systemctl", "is-active", "lab-hello.service", "provisiond-agent.service")
    assert state.stdout.splitlines() == [f"{SERIAL}: succeeded (exit 0)", "  active", "  active"], state.stdout
    # What post-agent installed: a unit systemd reads without a warning (it was 0600 under post-agent's
    # umask 077, and systemd said so at every load), and a private configuration.
    modes = e2e.provctl("run", SERIAL, "--", "stat", "-c", "%a %n", "/etc/systemd/system/provisiond-agent.service",
                        "/etc/provisiond-agent/agent.json", "/usr/local/bin/provisiond-agent")
    assert modes.stdout.splitlines()[1:] == ["  644 /etc/systemd/system/provisiond-agent.service",
                                             "  600 /etc/provisiond-agent/agent.json",
                                             "  755 /usr/local/bin/provisiond-agent"], modes.stdout
    assert "marked world-inaccessible" not in vm.console(), vm.console()
    finished = time.monotonic()
    print(f"\ninstall {installed_at - started:.0f} s, second boot to READY {ready_at - installed_at:.0f} s, "
          f"provctl run {finished - ready_at:.0f} s, total {finished - started:.0f} s "
          f"({installed_system.describe()})", file=sys.stderr)
