"""One-click reinstall against a real BMC: `provctl install` through a live
`provisiond serve` whose power worker speaks IPMI (pyghmi) to OpenIPMI's
ipmi_sim. What the BMC was told is cross-checked with ipmitool and with the
calls its chassis program recorded. A planted BMC password never leaves the
vault: not in answers, events, logs, kickstarts, the database file or any
process's command line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from provisiond.cli import install as install_module
from provisiond.cli import power as power_module
from provisiond.cli.output import ExitStatus
from tests.cli.conftest import Provctl
from tests.conftest import LiveServer, install_token, matching_report

PLANTED = "Planted-Pw-7f3c9e"
BUDGET = 8  # seconds of retries per operation


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(power_module, "POLL_SECONDS", 0.05)
    monkeypatch.setattr(install_module, "POLL_SECONDS", 0.2)


@pytest.fixture
def bmc(ipmi_sim):
    return ipmi_sim(password=PLANTED)


@pytest.fixture
def server(settings, services, client, auth, demo_data, bmc):
    """712DM2Y's BMC is the simulator; the server logs at DEBUG (the secret must not show there either)."""
    answer = client.patch("/api/v1/hosts/712DM2Y", headers=auth, json={"bmc": {
        "type": "ipmi", "address": "127.0.0.1", "port": bmc.port, "user": "admin", "password": PLANTED}})
    assert answer.status_code == 200, answer.get_json()
    services.vault  # noqa: B018  (the key exists before the workers start)
    live = LiveServer(settings, PROVISIOND_LOG_LEVEL="DEBUG", PROVISIOND_BMC_MIN_GAP_MS="100",
                      PROVISIOND_POWER_POLL_MS="100", PROVISIOND_BMC_BUDGET_SECONDS=str(BUDGET))
    yield live
    live.stop()


@pytest.fixture
def provctl(server, admin_token, tmp_path) -> Provctl:
    home = tmp_path / "home"
    home.mkdir()
    return Provctl(url=server.url, token=admin_token, home=home)


def operations_done(provctl: Provctl, serial: str, count: int, timeout: float = 60) -> list[dict]:
    headers = {"Authorization": f"Bearer {provctl.token}"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ops = requests.get(f"{provctl.url}/api/v1/hosts/{serial}/power", headers=headers, timeout=10).json()
        ops = ops["operations"]
        if len(ops) >= count and all(op["status"] in ("done", "failed") for op in ops):
            return list(reversed(ops))
        time.sleep(0.1)
    pytest.fail(f"power operations of {serial} did not finish: {ops}")


def boot_flags(bmc) -> str:
    return bmc.ipmitool("chassis", "bootparam", "get", "5")


def test_install_sets_pxe_once_resets_and_done_sets_disk(provctl, bmc, services, server):
    armed = provctl("install", "712DM2Y", "--yes", "--no-wait")
    assert "power     ipmi 127.0.0.1: boot device PXE (next boot only), then reset (power on if off)" in armed.stdout
    ops = operations_done(provctl, "712DM2Y", 1)
    assert [(op["argument"], op["status"], op["result"]) for op in ops] == [
        ("netboot", "done", "boot device pxe (next boot only), then was off: powered on")]
    assert [(a.name, a.value) for a in bmc.actions()] == [("boot", "pxe"), ("power", "1")]
    flags = boot_flags(bmc)
    assert "Boot Device Selector : Force PXE" in flags and "Options apply to only next boot" in flags
    assert bmc.power

    # The installer runs; %post's done sets the boot device to disk, for good.
    bmc.clear()
    installer = requests.Session()
    base = f"{server.url}/install/{install_token(services, '712DM2Y')}"
    assert installer.get(f"{base}/ks").ok
    assert installer.post(f"{base}/pre-report", json=matching_report()).ok
    assert installer.post(f"{base}/slot").ok
    assert installer.post(f"{base}/done", json={}).ok
    ops = operations_done(provctl, "712DM2Y", 2)
    assert (ops[-1]["description"], ops[-1]["result"]) == ("set the boot device to disk (persistent)",
                                                            "disk (persistent)")
    assert [(a.name, a.value) for a in bmc.actions()] == [("boot", "default")]  # ipmi_sim's word for disk
    # ipmi_sim keeps the device, not the persistence flag (tests/power/test_ipmi.py checks the request).
    assert "Boot Device Selector : Force Boot from default Hard-Drive" in boot_flags(bmc)

    assert provctl("power", "712DM2Y", "status").stdout == "712DM2Y: on\n"
    assert provctl("power", "712DM2Y", "on").stdout == "712DM2Y: already on\n"
    assert provctl("power", "712DM2Y", "reset").stdout == "712DM2Y: reset\n"
    assert [(a.name, a.value) for a in bmc.actions()][-1] == ("reset", "1")
    assert provctl("bootdev", "712DM2Y", "pxe").stdout == "712DM2Y: pxe (next boot only)\n"
    assert provctl("bootdev", "712DM2Y", "status").stdout == "712DM2Y: pxe (next boot only)\n"
    assert provctl("power", "712DM2Y", "off").stdout == "712DM2Y: powered off\n"
    assert not bmc.power


def test_a_wrong_password_and_a_dead_bmc_say_so(provctl, bmc, client, auth, server):
    client.patch("/api/v1/hosts/712DM2Y", json={"bmc": {"password": "not-the-password"}}, headers=auth)
    refused = provctl("power", "712DM2Y", "status", status=ExitStatus.POWER_FAILED)
    assert "BMC ipmi 127.0.0.1:" in refused.stderr and "the BMC refused user 'admin'" in refused.stderr

    bmc.stop()
    client.patch("/api/v1/hosts/712DM2Y", json={"bmc": {"password": PLANTED}}, headers=auth)
    started = time.monotonic()
    dead = provctl("power", "712DM2Y", "status", status=ExitStatus.POWER_FAILED)
    assert time.monotonic() - started < BUDGET + 15  # the budget, plus the attempt under way
    assert "power status: no answer from the BMC" in dead.stderr and "gave up after" in dead.stderr


def test_the_planted_password_never_leaves_the_vault(provctl, bmc, services, server, settings, auth):
    provctl("install", "712DM2Y", "--yes", "--no-wait")
    operations_done(provctl, "712DM2Y", 1)
    provctl("power", "712DM2Y", "status")
    seen: list[str] = []
    for path in ("/hosts/712DM2Y", "/hosts/712DM2Y/events", "/hosts/712DM2Y/power", "/export/hosts?format=yaml",
                 "/export/hosts?format=csv", "/hosts/712DM2Y/kickstart", "/hosts?limit=10"):
        response = requests.get(f"{server.url}/api/v1{path}", headers=auth, timeout=10)
        assert response.ok, (path, response.text)
        seen.append(response.text)
    seen.append(provctl("hosts", "show", "712DM2Y", "--json").stdout)
    seen.append(provctl("log", "712DM2Y").stdout)
    token = install_token(services, "712DM2Y")
    seen.append(requests.get(f"{server.url}/install/{token}/ks", timeout=10).text)
    seen.append(server.log.read_text(errors="replace"))
    for text_seen in seen:
        assert PLANTED not in text_seen
    assert "DEBUG" in seen[-1] or "INFO" in seen[-1] or seen[-1] == ""  # the log really was written at DEBUG

    with services.db.read() as session:
        if session.bind.dialect.name == "sqlite":
            database = Path(settings.effective_database_url.removeprefix("sqlite:///"))
            files = [database, *database.parent.glob(database.name + "-*")]  # -wal, -shm
            assert all(PLANTED.encode() not in f.read_bytes() for f in files if f.exists())
        else:
            for table in ("hosts", "events", "power_operations", "installs"):
                dumped = session.execute(text(f"SELECT CAST({table} AS text) FROM {table}")).scalars().all()
                assert not any(PLANTED in row for row in dumped), table
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert PLANTED.encode() not in cmdline.read_bytes(), cmdline
        except OSError:
            continue  # the process ended
