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
GATEWAY = "https://gateway.provisiond.test:8443"  # where the installed agent is told to go


def sections(kickstart: str) -> dict[str, str]:
    """``{"pre": body, "post": body, "onerror": body}`` of a kickstart: the
    first section of each kind; a second %pre (bmc-network) is ``pre2``; the
    %post that installs provisiond-agent (post-agent) is ``agent``."""
    found: dict[str, str] = {}
    for match in re.finditer(r"^%(pre|post|onerror)\b([^\n]*)\n(.*?)^%end$", kickstart, re.M | re.S):
        kind, header, body = match.groups()
        if "provisiond-agent" in header:
            found["agent"] = body
            continue
        found[kind if kind not in found else f"{kind}2"] = body
    return found


def smbios_memory_device(size_mib: int) -> bytes:
    """An SMBIOS type 17 (Memory Device) structure as /sys/firmware/dmi shows
    it: Size at 0x0C in MB (0x7FFF: see the Extended Size at 0x1C), two
    strings after it."""
    size = size_mib if size_mib < 0x7FFF else 0x7FFF
    fixed = bytearray(0x28)
    fixed[0], fixed[1] = 17, 0x28
    fixed[12:14] = size.to_bytes(2, "little")
    fixed[0x1C:0x20] = (size_mib if size == 0x7FFF else 0).to_bytes(4, "little")
    return bytes(fixed) + b"DIMM A1\x00Bank 0\x00\x00"


@pytest.fixture
def machine(tmp_path: Path):
    """A fake sysfs for the installer: returns (root, run(script) -> CompletedProcess)."""
    require(os.geteuid() == 0, "running %pre in a mount namespace needs root")
    require(shutil.which("unshare") is not None and shutil.which("curl") is not None, "needs unshare and curl")
    root = tmp_path / "sys"

    def describe(serial: str, mac: str = MAC, disk_gb: int = 600, dimms_mib: tuple[int, ...] = ()) -> None:
        """``dimms_mib``: the memory devices the firmware lists (SMBIOS type
        17 entries; 0 is an empty slot); none: the installer cannot read them."""
        shutil.rmtree(root, ignore_errors=True)
        entries = root / "firmware" / "dmi" / "entries"
        entries.mkdir(parents=True)
        for index, size in enumerate(dimms_mib):
            (entries / f"17-{index}").mkdir()
            (entries / f"17-{index}" / "raw").write_bytes(smbios_memory_device(size))
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

    installer_tmp = tmp_path / "installer-tmp"  # the installer's /tmp: shared by its sections, by no one else
    installer_tmp.mkdir()

    def start(script: str) -> subprocess.Popen[str]:
        (installer_tmp / "section.sh").write_text(script)
        wrapper = (f"mount -t tmpfs none /sys/class && cp -a {root}/class/. /sys/class/ && "
                   f"mount --bind {root}/block /sys/block && mount -t tmpfs none /sys/firmware && "
                   f"cp -a {root}/firmware/. /sys/firmware/ && mount --bind {installer_tmp} /tmp && "
                   "exec sh /tmp/section.sh")
        return subprocess.Popen(["unshare", "--mount", "sh", "-c", wrapper], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        process = start(script)
        output, _ = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, output, output)

    target = tmp_path / "target"  # what a %post wrote under /etc, /usr/local and /var/lib, copied out

    def run_on_target(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a %post as on the installed system: /etc, /usr/local and
        /var/lib are overlays (this machine's below, a tmpfs above) so the
        section writes where it would and this machine is left as it was;
        what it wrote is copied to ``target``. ``/root`` too (--log)."""
        overlays = ("etc", "usr/local", "var/lib", "root")
        mounts = " && ".join(
            f"mkdir -p /run/pvd-target/upper/{d} /run/pvd-target/work/{d} && "
            f"mount -t overlay overlay -o lowerdir=/{d},upperdir=/run/pvd-target/upper/{d},"
            f"workdir=/run/pvd-target/work/{d} /{d}" for d in overlays)
        section = (f"mount -t tmpfs none /run && {mounts} && "
                   f"{{ sh {installer_tmp}/section.sh; rc=$?; cp -a /run/pvd-target/upper/. {target}/; exit $rc; }}")
        (installer_tmp / "section.sh").write_text(script)
        target.mkdir(exist_ok=True)
        done = subprocess.run(["unshare", "--mount", "sh", "-c", section], capture_output=True, text=True,
                              timeout=timeout)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout + done.stderr, done.stderr)

    describe.start = start  # type: ignore[attr-defined]
    describe.tmp = installer_tmp  # type: ignore[attr-defined]  (what the sections see as /tmp)
    describe.on_target = run_on_target  # type: ignore[attr-defined]
    describe.target = target  # type: ignore[attr-defined]
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
    live = LiveServer(settings, PROVISIOND_INSTALL_CAP="1", PROVISIOND_SLOT_RETRY_SECONDS="1",
                      PROVISIOND_AGENT_PUBLIC_URL=GATEWAY)
    yield live
    live.stop()


def test_pre_and_post_run_the_whole_install(server, services, auth, machine):
    describe, run = machine
    describe("712DM2Y", dimms_mib=(32768, 0, 16384, 512))
    token, parts = fetch_kickstart(server, services, auth)
    # pre2: bmc-network (the demo site sets bmc_netmask); agent: post-agent, before post-done
    assert set(parts) == {"pre", "pre2", "agent", "post", "onerror"}
    pre = run(parts["pre"])
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "provisiond: reporting hardware: serial 712DM2Y" in pre.stdout
    assert "MiB (smbios)" in pre.stdout
    assert "provisiond: install slot granted" in pre.stdout
    assert state(server, auth) == ("installing", None)
    host = requests.get(f"{server.url}/api/v1/hosts/712DM2Y", headers=auth).json()
    assert host["hardware"]["memory_mib"] == 32768 + 16384 + 512  # learned: what the firmware lists
    agent = describe.on_target(parts["agent"])
    assert agent.returncode == 0, agent.stdout
    assert "provisiond: provisiond-agent installed; it enrolls on the first boot" in agent.stdout
    installed_agent(describe.target, server, services)
    post = run(parts["post"])
    assert post.returncode == 0, post.stderr
    assert state(server, auth) == ("installed", None)


def installed_agent(target: Path, server: LiveServer, services) -> None:
    """What post-agent leaves on the new system: the program provisiond
    serves, the CA it pins, its configuration with a ticket, the unit, enabled."""
    import hashlib
    import json

    program = target / "usr/local/bin/provisiond-agent"
    served = requests.get(f"{server.url}/agent/v1/provisiond-agent.pyz").content
    assert program.read_bytes() == served and program.stat().st_mode & 0o777 == 0o755
    assert requests.get(f"{server.url}/agent/v1/provisiond-agent.pyz.sha256").text.split()[0] == \
        hashlib.sha256(served).hexdigest()
    assert (target / "etc/provisiond-agent/ca.pem").read_text() == requests.get(f"{server.url}/agent/v1/ca.pem").text
    config_file = target / "etc/provisiond-agent/agent.json"
    assert config_file.stat().st_mode & 0o777 == 0o600  # it holds the ticket
    config = json.loads(config_file.read_text())
    assert config["ticket"].startswith("pvt_") and config["server_url"] == GATEWAY
    assert config["ca_fingerprint"] and config["state_dir"] == "/var/lib/provisiond-agent"
    unit = target / "etc/systemd/system/provisiond-agent.service"
    assert unit.read_text() == requests.get(f"{server.url}/agent/v1/provisiond-agent.service").text
    wanted = target / "etc/systemd/system/multi-user.target.wants/provisiond-agent.service"
    assert wanted.is_symlink() and wanted.resolve().name == "provisiond-agent.service"


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
    tools = describe.tmp / "bin"  # /tmp/bin to the section
    tools.mkdir()
    calls = describe.tmp / "ipmitool.calls"
    (tools / "ipmitool").write_text("#!/bin/sh\necho \"$*\" >> /tmp/ipmitool.calls\n")
    (tools / "ipmitool").chmod(0o755)
    (tools / "modprobe").write_text("#!/bin/sh\nexit 1\n")  # never load real modules from a test
    (tools / "modprobe").chmod(0o755)
    done = run("PATH=/tmp/bin:$PATH\n" + parts["pre2"])
    assert done.returncode == 0, done.stdout
    said = "oob: set BMC channel 1 to 192.168.0.10/255.255.255.0 gateway 192.168.0.1"
    assert f"provisiond: {said}" in done.stdout
    assert calls.read_text().splitlines() == [
        "lan print 1", "lan set 1 ipsrc static", "lan set 1 ipaddr 192.168.0.10",
        "lan set 1 netmask 255.255.255.0", "lan set 1 defgw ipaddr 192.168.0.1"]
    events = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    assert events[-1]["message"] == said

    (tools / "ipmitool").write_text("#!/bin/sh\nexit 1\n")  # no local BMC answers
    absent = run("PATH=/tmp/bin:$PATH\n" + parts["pre2"])
    assert absent.returncode == 0  # optional: the install goes on
    assert "provisiond: oob: no local BMC answers on channel 1: BMC left as it is" in absent.stdout


def test_memory_falls_back_to_memtotal_with_a_tolerance(server, services, client, auth, machine):
    """No SMBIOS memory list: the kernel's MemTotal is reported, and a record
    of the installed size (MemTotal rounded up to whole GiB here) passes."""
    describe, run = machine
    describe("712DM2Y")  # no memory devices listed
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    installed = -(-mem_kib // (1024 * 1024)) * 1024
    client.patch("/api/v1/hosts/712DM2Y", json={"hardware": {"memory_mib": installed}}, headers=auth)
    _token, parts = fetch_kickstart(server, services, auth)
    pre = run(parts["pre"])
    assert pre.returncode == 0, pre.stdout
    assert f"MiB (meminfo)" in pre.stdout
    events = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    assert "MiB of MemTotal" in next(e["message"] for e in events if e["kind"] == "hardware")


def test_pre_reports_through_a_server_restart(server, services, settings, auth, machine):
    """provisiond down when %pre reports: the report is retried (it used to
    halt the install with "hardware check failed (000)")."""
    describe, run = machine
    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    server.stop()
    process = describe.start(parts["pre"].replace("sleep 5", "sleep 1"))
    restarted = None
    try:
        time.sleep(3)  # the installer finds nobody home a few times
        restarted = LiveServer(settings, port=server.port, PROVISIOND_INSTALL_CAP="1",
                               PROVISIOND_SLOT_RETRY_SECONDS="1")
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        try:
            assert process.returncode == 0, output
            assert "provisiond: hardware report failed (000): provisiond unreachable, retry 1 of 60 in 5 s" in output
            assert output.index("unreachable") < output.index("install slot granted")
            assert state(restarted or server, auth) == ("installing", None)
        finally:
            if restarted is not None:
                restarted.stop()


def test_onerror_sends_the_cause_the_installer_saw(server, services, auth, machine):
    describe, run = machine
    describe("712DM2Y", mac="00:00:00:00:00:00")  # a report provisiond refuses (400)
    _token, parts = fetch_kickstart(server, services, auth)
    pre = run(parts["pre"])
    assert pre.returncode == 1
    assert "provisiond: hardware report refused (400): " in pre.stdout
    onerror = run(parts["onerror"])
    assert onerror.returncode == 0, onerror.stdout
    assert "provisiond: failure reported: hardware report refused (400): " in onerror.stdout
    assert state(server, auth) == ("failed", "installer_error")
    events = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    assert ("installer reported failure: hardware report refused (400): nics[0].mac: '00:00:00:00:00:00' is the "
            "all-zero MAC") in events[-1]["message"]


def test_onerror_after_a_hardware_mismatch_says_so_and_calls_nobody(server, services, auth, machine):
    """provisiond ended the install and revoked the token: %onerror has
    nothing to add (it used to call the dead token and print a JSON 404)."""
    describe, run = machine
    describe("712DM2X")
    _token, parts = fetch_kickstart(server, services, auth)
    assert run(parts["pre"]).returncode == 1
    before = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    onerror = run(parts["onerror"])
    assert onerror.returncode == 0
    assert onerror.stdout.strip() == ("provisiond: the install was ended by provisiond; the reason is on its "
                                      "timeline (provctl log)")
    assert requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"] == before
    assert state(server, auth) == ("failed", "hw_mismatch")


def test_a_failed_agent_step_is_said_on_the_console_and_the_timeline(server, services, auth, machine):
    """post-agent run before %pre took a slot: provisiond refuses the
    agent's configuration (409); the section says which step failed and why,
    on the console and the host's timeline, and leaves no configuration."""
    describe, run = machine
    describe("712DM2Y")
    _token, parts = fetch_kickstart(server, services, auth)
    agent = describe.on_target(parts["agent"])
    assert agent.returncode == 1, agent.stdout
    said = ("provisiond-agent not installed: provisiond refused the agent's configuration (HTTP 409): "
            "the agent's configuration is handed out while the install runs; the host is booting")
    assert f"provisiond: {said}\n" in agent.stdout
    events = requests.get(f"{server.url}/api/v1/hosts/712DM2Y/events", headers=auth).json()["events"]
    assert events[-1]["message"] == said
    assert not (describe.target / "etc/provisiond-agent/agent.json").exists()
    assert (describe.target / "usr/local/bin/provisiond-agent").exists()  # the steps before it were done
