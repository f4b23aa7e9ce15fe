"""The rendered %pre, %post and %onerror sections run for real under `sh`
against a live provisiond, in a mount namespace whose /sys shows the machine
the test describes (DMI serial, NICs, disks)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import LiveServer, install_token, require

MAC = "00:26:b9:35:e9:aa"


def sections(kickstart: str) -> dict[str, str]:
    """``{"pre": body, "post": body, "onerror": body}`` of a kickstart: the
    first section of each kind; a second %pre (bmc-network) is ``pre2``."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^%(pre|post|onerror)\b[^\n]*\n(.*?)^%end$", kickstart, re.M | re.S):
        kind = match.group(1)
        found[kind if kind not in found else f"{kind}2"] = match.group(2)
    return found


@pytest.fixture
def machine(tmp_path: Path):
    """A fake sysfs for the installer: returns (root, run(script) -> CompletedProcess)."""
    require(os.geteuid() == 0, "running %pre in a mount namespace needs root")
    require(shutil.which("unshare") is not None and shutil.which("curl") is not None, "needs unshare and curl")
    root = tmp_path / "sys"

    def describe(serial: str, mac: str = MAC, disk_gb: int = 600) -> None:
        shutil.rmtree(root, ignore_errors=True)
        dmi = root / "class" / "dmi" / "id"
        dmi.mkdir(parents=True)
        (dmi / "product_serial").write_text(serial + "\n")
        (dmi / "sys_vendor").write_text("Dell Inc.\n")
        (dmi / "product_name").write_text("PowerEdge R710\n")
        route = subprocess.run(["ip", "-o", "route", "get", "127.0.0.1"], capture_output=True, text=True).stdout
        for name in {"eth0", *re.findall(r" dev (\S+)", route)}:  # the NIC `ip route get` names too
            nic = root / "class" / "net" / name
            nic.mkdir(parents=True, exist_ok=True)
            (nic / "address").write_text(mac + "\n")
            (nic / "carrier").write_text("1\n")
            (nic / "device").write_text("")
        disk = root / "block" / "sda"
        (disk / "device").mkdir(parents=True)
        (disk / "size").write_text(f"{disk_gb * 1000 ** 3 // 512}\n")
        (disk / "device" / "model").write_text("PERC H700\n")

    def start(script: str) -> subprocess.Popen[str]:
        path = tmp_path / "section.sh"
        path.write_text(script)
        wrapper = (f"mount -t tmpfs none /sys/class && cp -a {root}/class/. /sys/class/ && "
                   f"mount --bind {root}/block /sys/block && exec sh {path}")
        return subprocess.Popen(["unshare", "--mount", "sh", "-c", wrapper], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        process = start(script)
        output, _ = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, output, output)

    describe.start = start  # type: ignore[attr-defined]
    return describe, run


def fetch_kickstart(server: LiveServer, services, headers, serial: str = "712DM2Y") -> tuple[str, dict[str, str]]:
    assert requests.post(f"{server.url}/api/v1/hosts/{serial}/install", json={}, headers=headers).status_code == 201
    token = install_token(services, serial)
    kickstart = requests.get(f"{server.url}/install/{token}/ks").text
    return token, sections(kickstart)


def state(server: LiveServer, headers, serial: str = "712DM2Y") -> tuple[str, str | None]:
    host = requests.get(f"{server.url}/api/v1/hosts/{serial}", headers=headers).json()
    return host["state"], host["state_reason"]


def hold_the_only_slot(server: LiveServer, services, headers) -> str:
    """SN-WEB-0001 installs (cap 1): the next installer must wait. Returns its token."""
    token, _ = fetch_kickstart(server, services, headers, "SN-WEB-0001")
    report = {"serial": "SN-WEB-0001", "boot_mac": "52:54:00:00:00:01", "nics": [], "cpus": 4, "memory_mib": 8000}
    assert requests.post(f"{server.url}/install/{token}/pre-report", json=report).status_code == 200
    assert requests.post(f"{server.url}/install/{token}/slot").status_code == 200
    return token


@pytest.fixture
def server(settings, services, client, demo_data, auth):
    # cpus: what this machine's /proc/cpuinfo says, so the check passes; memory is learned.
    cpus = sum(1 for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("processor"))
    client.patch("/api/v1/hosts/712DM2Y", json={"hardware": {"cpus": cpus, "memory_mib": None}}, headers=auth)
    live = LiveServer(settings, PROVISIOND_INSTALL_CAP="1", PROVISIOND_SLOT_RETRY_SECONDS="1")
    yield live
    live.stop()


def test_pre_and_post_run_the_whole_install(server, services, auth, machine):
    describe, run = machine
    describe("712DM2Y")
    token, parts = fetch_kickstart(server, services, auth)
    assert set(parts) == {"pre", "pre2", "post", "onerror"}  # pre2: bmc-network (the demo site sets bmc_netmask)
    pre = run(parts["pre"])
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "provisiond: reporting hardware: serial 712DM2Y" in pre.stdout
    assert "provisiond: install slot granted" in pre.stdout
    assert state(server, auth) == ("installing", None)
    host = requests.get(f"{server.url}/api/v1/hosts/712DM2Y", headers=auth).json()
    assert host["hardware"]["memory_mib"] > 0  # learned from /proc/meminfo
    post = run(parts["post"])
    assert post.returncode == 0, post.stderr
    assert state(server, auth) == ("installed", None)


def test_pre_halts_on_a_hardware_mismatch_and_says_why(server, services, auth, machine):
    describe, run = machine
    describe("712DM2X")  # seed 004: "Wrong SN, auto detect: 712dm2y, NOT 712dm2x"
    _token, parts = fetch_kickstart(server, services, auth)
    pre = run(parts["pre"])
    assert pre.returncode == 1
    assert ("provisiond: hardware check failed (409): hardware does not match the data source: wrong serial number: "
            "the machine reports 712DM2X, the data source expects 712DM2Y") in pre.stdout
    assert state(server, auth) == ("failed", "hw_mismatch")


def test_pre_waits_for_a_slot_printing_each_retry(server, services, auth, machine):
    describe, run = machine
    other_token = hold_the_only_slot(server, services, auth)

    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    process = describe.start(parts["pre"])
    try:
        deadline = time.monotonic() + 30
        while state(server, auth)[0] != "queued" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.5)  # a couple of 429s and retries
        assert requests.post(f"{server.url}/install/{other_token}/done").status_code == 200
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "provisiond: concurrent install limit 1 reached: position 1, retry in 1 s" in output
    assert output.index("limit 1 reached") < output.index("install slot granted")
    assert state(server, auth) == ("installing", None)


def test_pre_keeps_waiting_for_a_slot_through_a_server_restart(server, services, settings, auth, machine):
    """A restart of provisiond while installers wait for slots must not halt them."""
    describe, run = machine
    other_token = hold_the_only_slot(server, services, auth)

    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    process = describe.start(parts["pre"].replace("sleep 5", "sleep 1"))  # the unreachable pause, shortened
    restarted = None
    try:
        deadline = time.monotonic() + 30
        while state(server, auth)[0] != "queued" and time.monotonic() < deadline:
            time.sleep(0.2)
        server.stop()
        time.sleep(3)  # the installer finds nobody home a few times
        restarted = LiveServer(settings, port=server.port, PROVISIOND_INSTALL_CAP="1",
                               PROVISIOND_SLOT_RETRY_SECONDS="1")
        assert requests.post(f"{server.url}/install/{other_token}/done").status_code == 200
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        if restarted is not None:
            restarted.stop()
    assert process.returncode == 0, output
    assert "provisiond: slot request failed (000): provisiond unreachable, retry 1 of 60 in 5 s" in output
    assert output.index("unreachable") < output.index("install slot granted")


def test_onerror_reports_the_failure(server, services, auth, machine):
    describe, run = machine
    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    result = run(parts["onerror"])
    assert result.returncode == 0, result.stderr
    assert state(server, auth) == ("failed", "installer_error")


def test_bmc_network_sets_the_local_bmc_and_reports_it(server, services, auth, machine, tmp_path):
    describe, run = machine
    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    assert "oob" in parts["pre2"]
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "ipmitool.calls"
    (tools / "ipmitool").write_text(f"#!/bin/sh\necho \"$*\" >> {calls}\n")
    (tools / "ipmitool").chmod(0o755)
    (tools / "modprobe").write_text("#!/bin/sh\nexit 1\n")  # never load real modules from a test
    (tools / "modprobe").chmod(0o755)
    done = run(f"PATH={tools}:$PATH\n" + parts["pre2"])
    assert done.returncode == 0, done.stdout
    said = "oob: set BMC channel 1 to 192.168.0.10/255.255.255.0 gateway 192.168.0.1"
    assert f"provisiond: {said}" in done.stdout
    assert calls.read_text().splitlines() == [
        "lan print 1", "lan set 1 ipsrc static", "lan set 1 ipaddr 192.168.0.10",
        "lan set 1 netmask 255.255.255.0", "lan set 1 defgw ipaddr 192.168.0.1"]
    events = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    assert events[-1]["message"] == said

    (tools / "ipmitool").write_text("#!/bin/sh\nexit 1\n")  # no local BMC answers
    absent = run(f"PATH={tools}:$PATH\n" + parts["pre2"])
    assert absent.returncode == 0  # optional: the install goes on
    assert "provisiond: oob: no local BMC answers on channel 1: BMC left as it is" in absent.stdout
