"""provctl power / bootdev / install with power, against a live server whose
power worker drives the fake BMC driver (the ipmi_sim runs are in
tests/power/test_provctl_ipmi.py)."""

from __future__ import annotations

import json

import pytest

from provisiond.cli import power as power_module
from provisiond.cli.output import ExitStatus
from tests.cli.test_provctl_install import api, events, state, wait_for


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(power_module, "POLL_SECONDS", 0.05)


def fake_bmc(settings, serial):
    return json.loads((settings.data_dir / "fake-bmc" / f"{serial}.json").read_text())


def test_power_and_bootdev_through_the_worker(provctl, demo_data, settings):
    assert provctl("power", "712DM2Y", "status").stdout == "712DM2Y: off\n"
    assert provctl("power", "712DM2Y", "on").stdout == "712DM2Y: powered on\n"
    assert provctl("power", "712DM2Y", "on").stdout == "712DM2Y: already on\n"
    assert provctl("bootdev", "712DM2Y", "pxe").stdout == "712DM2Y: pxe (next boot only)\n"
    assert provctl("bootdev", "712DM2Y", "status").stdout == "712DM2Y: pxe (next boot only)\n"
    assert provctl("bootdev", "712DM2Y", "disk", "--persistent").stdout == "712DM2Y: disk (persistent)\n"
    assert provctl("power", "712DM2Y", "reset").stdout == "712DM2Y: reset\n"
    assert [a["action"] for a in fake_bmc(settings, "712DM2Y")["actions"]] == [
        "power on", "bootdev pxe", "bootdev disk persistent", "power reset"]

    queued = provctl("power", "712DM2Y", "off", "--no-wait").stdout
    assert queued.startswith("queued operation ") and queued.endswith(" on 712DM2Y: power off\n")
    done = json.loads(provctl("power", "712DM2Y", "status", "--json").stdout)
    assert (done["status"], done["result"]) == ("done", "off")  # after the queued "off": one BMC, in order
    messages = [e["message"] for e in events(provctl, "712DM2Y") if e["kind"] == "power"]
    assert any(m.startswith("queued by token tests: power off on BMC fake 192.168.0.10") for m in messages)


def test_failures_exit_10_with_the_bmc_and_the_reason(provctl, demo_data):
    provctl("hosts", "edit", "SN-WEB-0001", "--set", "bmc.type=wol")
    failed = provctl("power", "SN-WEB-0001", "off", status=ExitStatus.POWER_FAILED)
    assert failed.stderr.endswith("power off: Wake-on-LAN can only power a machine on\n")
    assert "BMC wol 52:54:00:00:00:01 (host SN-WEB-0001)" in failed.stderr

    no_bmc = provctl("power", "SN-NEW-0001", "on", status=ExitStatus.CONFLICT)
    assert "host SN-NEW-0001 has no BMC" in no_bmc.stderr
    provctl("power", "712DM2Y", "dance", status=ExitStatus.USAGE)
    provctl("power", "NOPE", "on", status=ExitStatus.NOT_FOUND)


def test_install_sets_pxe_once_resets_and_after_done_boots_from_disk(provctl, demo_data, settings, services):
    from tests.cli.test_provctl_install import Installer
    from tests.conftest import install_token, matching_report

    armed = provctl("install", "712DM2Y", "--yes", "--no-wait")
    assert "power     fake 192.168.0.10: boot device PXE (next boot only), then reset (power on if off)\n" in (
        armed.stdout)
    assert armed.stdout.rstrip().endswith("power operation 1 queued")
    wait_for(lambda: all(op["status"] == "done" for op in api(provctl, "GET", "/hosts/712DM2Y/power")["operations"]),
             "the arming operations")
    bmc = fake_bmc(settings, "712DM2Y")
    assert [a["action"] for a in bmc["actions"]] == ["bootdev pxe", "power on"]  # it was off

    installer = Installer(provctl.url, install_token(services, "712DM2Y"))
    installer.boot(matching_report())
    installer.slot()
    installer.call("POST", "done", json={})
    assert state(provctl, "712DM2Y") == ("installed", None)
    wait_for(lambda: fake_bmc(settings, "712DM2Y")["bootdev"] == "disk", "the boot device back to disk")
    assert fake_bmc(settings, "712DM2Y")["persistent"] is True
    power_lines = [e["message"] for e in events(provctl, "712DM2Y") if e["kind"] == "power"]
    assert power_lines[-1].startswith("operation 2: set the boot device to disk (persistent): disk (persistent)")


def test_batch_install_from_a_file_and_a_group(provctl, demo_data, tmp_path):
    listing = tmp_path / "hosts.txt"
    listing.write_text("# rack a1\n712DM2Y\n\nSN-WEB-0001  # web\n")
    armed = provctl("install", "--file", str(listing), "--yes", "--no-wait", "--pace", "0")
    assert armed.stdout.splitlines()[-2:] == ["armed 712DM2Y: install 1", "armed SN-WEB-0001: install 2"]
    assert state(provctl, "712DM2Y")[0] == state(provctl, "SN-WEB-0001")[0] == "armed"

    both = provctl("install", "--group", "rack-a1", "--yes", "--no-wait", status=ExitStatus.CONFLICT)
    assert "host 712DM2Y is already armed" in both.stderr
    provctl("install", "--group", "nope", "--yes", status=ExitStatus.NOT_FOUND)
    provctl("install", "712DM2Y", "--group", "rack-a1", status=ExitStatus.USAGE)
    provctl("install", "712DM2Y", "--pace", "3", status=ExitStatus.USAGE)
    bad = tmp_path / "bad.txt"
    bad.write_text("712DM2Y SN-WEB-0001\n")
    refused = provctl("install", "--file", str(bad), "--yes", status=ExitStatus.USAGE)
    assert "bad.txt:1: one serial number per line" in refused.stderr
