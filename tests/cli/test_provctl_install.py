"""provctl's install lifecycle (install, cancel, log, status, queue) against a
real ``provisiond serve``, on SQLite and on PostgreSQL. The installer side
(kickstart fetch, %pre report, slot, done) is driven with plain ``requests``
on the installer endpoints, with the one-time token the test reads from the
database as the netboot side would."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from provisiond.cli import install as install_module
from provisiond.cli.output import ExitStatus
from tests.cli.conftest import CLIENT_ENV, Outcome, Provctl
from tests.conftest import LiveServer, install_token, matching_report

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d> \S")
WEB_REPORT = {"serial": "SN-WEB-0001", "cpus": 4, "memory_mib": 8192, "boot_mac": "52:54:00:00:00:01",
              "nics": [{"name": "eth0", "mac": "52:54:00:00:00:01", "link": True}]}


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    """In-process followers poll five times a second (subprocesses keep 1 s)."""
    monkeypatch.setattr(install_module, "POLL_SECONDS", 0.2)


# --------------------------------------------------------------------------- helpers


def api(provctl: Provctl, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(method, f"{provctl.url}/api/v1{path}",
                                headers={"Authorization": f"Bearer {provctl.token}"}, timeout=10, **kwargs)
    assert response.ok, response.text
    return response.json()


def state(provctl: Provctl, serial: str) -> tuple[str, str | None]:
    host = api(provctl, "GET", f"/hosts/{serial}")
    return host["state"], host["state_reason"]


def events(provctl: Provctl, serial: str) -> list[dict[str, Any]]:
    return api(provctl, "GET", f"/hosts/{serial}/events")["events"]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Installer:
    """The installer's side of one install: what the kickstart's %pre/%post do."""

    def __init__(self, url: str, token: str) -> None:
        self.base = f"{url}/install/{token}"

    def call(self, method: str, step: str, expect: int = 200, **kwargs: Any) -> requests.Response:
        response = requests.request(method, f"{self.base}/{step}", timeout=10, **kwargs)
        assert response.status_code == expect, (step, response.status_code, response.text)
        return response

    def boot(self, report: dict[str, Any], expect: int = 200) -> None:
        """Fetch the kickstart and post the %pre hardware report."""
        self.call("GET", "ks")
        self.call("POST", "pre-report", json=report, expect=expect)

    def slot(self, expect: int = 200) -> requests.Response:
        return self.call("POST", "slot", json={}, expect=expect)


class Spawned:
    """provctl as a running subprocess whose stdout lines the test reads as
    they come (stderr goes to a file, read at the end)."""

    def __init__(self, provctl: Provctl, *args: str, stderr: Path) -> None:
        environ = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
        environ.update({k: v for k, v in provctl.environment({}).items() if v is not None})
        self.args = args
        self.stderr_path = stderr
        with stderr.open("w") as errors:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "provisiond.cli.provctl", *args], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=errors, text=True, env=environ)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def expect(self, needle: str, timeout: float = 20) -> str:
        """Read stdout lines until one contains ``needle``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"provctl {' '.join(self.args)}: no line with {needle!r} in "
                                     f"{self.seen}; stderr {self.stderr_path.read_text()!r}") from None
            self.seen.append(line)
            if needle in line:
                return line

    def finish(self, timeout: float = 30) -> Outcome:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.pump.join(timeout=5)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        stderr = self.stderr_path.read_text()
        assert "Traceback" not in stderr, stderr
        return Outcome(code, "".join(self.seen), stderr)

    def interrupt(self) -> Outcome:
        """Ctrl-C."""
        self.process.send_signal(signal.SIGINT)
        return self.finish()


# --------------------------------------------------------------------------- pure helpers (no server)


def test_time_duration_and_line_formats():
    assert install_module.when("2026-04-24T08:29:59.123456+00:00") == "2026-04-24 08:29"
    assert install_module.when("2026-04-24T10:29:00+02:00") == "2026-04-24 08:29"  # always UTC
    assert install_module.when("2026-04-24T08:29:00") == "2026-04-24 08:29"  # naive: UTC
    assert install_module.when(None) is None
    assert install_module.event_line({"time": "2026-04-24T08:29:00+00:00", "message": "armed"}) == (
        "2026-04-24 08:29> armed")
    assert [install_module.duration(s) for s in (0, 7, 0.7, 0.04, 60, 192, 3725, -3)] == [
        "0s", "7s", "0.7s", "0s", "1m00s", "3m12s", "1h02m05s", "0s"]
    assert install_module.state_order({"zzz": 0, "failed": 1, "idle": 2, "armed": 0}) == [
        "idle", "armed", "failed", "zzz"]


def test_outcome_is_only_the_followed_installs_end():
    ends = {"install_id": 7, "data": {"state": "failed", "reason": "cancelled"}}
    assert install_module.outcome_of(ends, 7) == "failed"
    assert install_module.outcome_of(ends, 8) is None  # another install's end
    assert install_module.outcome_of({"install_id": 7, "data": {"state": "installing"}}, 7) is None
    assert install_module.outcome_of({"install_id": 7, "data": {"state": "installed"}}, 7) == "installed"
    assert install_module.outcome_of({"install_id": None, "data": {}}, 7) is None


# --------------------------------------------------------------------------- arming


def test_install_no_wait_status_log_cancel_and_json(provctl, demo_data):
    armed = provctl("install", "712DM2Y", "--yes", "--no-wait", "--no-power")
    assert armed.stdout.splitlines()[:5] == ["host      712DM2Y", "hostname  db01.example.com",
                                             "profile   mysql_server", "state     idle",
                                             "power     not touched (--no-power)"]
    assert re.fullmatch(r"armed 712DM2Y: install \d+; its next PXE boot installs it "
                        r"\(the token is valid until \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", armed.stdout.splitlines()[-1])
    assert armed.stderr == ""
    assert state(provctl, "712DM2Y") == ("armed", None)

    shown = provctl("status", "712DM2Y").stdout
    assert "state         armed\n" in shown and "outcome       under way\n" in shown
    assert re.search(r"^armed         \d{4}-\d\d-\d\d \d\d:\d\d UTC by token tests$", shown, re.M)
    assert re.search(r"^expires       \d{4}-.* UTC$", shown, re.M) and "slot granted  -\n" in shown
    summary = provctl("status").stdout.splitlines()
    assert summary[:3] == ["hosts          3", "install slots  0 of 55 in use", "waiting        0"]
    assert summary[4:8] == ["STATE       HOSTS", "idle        2", "armed       1", "booting     0"]
    assert len(summary) == 5 + 10  # every state, in flow order

    lines = provctl("log", "712DM2Y").stdout.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert "> host 712DM2Y added" in lines[0]
    assert "> install armed by token tests, profile mysql_server; token valid until" in lines[-1]
    last_id = events(provctl, "712DM2Y")[-1]["id"]
    assert provctl("log", "712DM2Y", "--since", str(last_id)).stdout == ""
    assert provctl("log", "712DM2Y", "--since", str(last_id - 1)).stdout == lines[-1] + "\n"

    again = provctl("install", "712DM2Y", "--yes", "--no-wait", "--no-power", status=ExitStatus.CONFLICT)
    assert "host 712DM2Y is already armed (an install is under way); cancel it first" in again.stderr

    cancelled = provctl("cancel", "712DM2Y", "--yes")
    assert cancelled.stdout == "cancelled the install of 712DM2Y: it is failed (cancelled)\n"
    assert state(provctl, "712DM2Y") == ("failed", "cancelled")
    assert "outcome       cancelled\n" in provctl("status", "712DM2Y").stdout
    assert "install cancelled by token tests (armed → failed: cancelled)" in provctl("log", "712DM2Y").stdout
    nothing = provctl("cancel", "712DM2Y", "--yes", status=ExitStatus.CONFLICT)
    assert nothing.stderr == "provctl: host 712DM2Y has no install to cancel (it is failed)\n"

    assert "install  none yet" in provctl("status", "SN-NEW-0001").stdout

    # --json: the server's documents. A failed host may be armed again; --no-power says nothing about power.
    rearmed = provctl("install", "712DM2Y", "--yes", "--no-wait", "--no-power", "--json")
    assert rearmed.stderr.startswith("host      712DM2Y\n") and "power     not touched (--no-power)" in rearmed.stderr
    armed = json.loads(rearmed.stdout)
    assert armed["serial"] == "712DM2Y" and armed["state"] == "armed" and isinstance(armed["install_id"], int)
    assert set(armed) == {"serial", "state", "install_id", "expires_at", "power_operations"}
    assert armed["power_operations"] == []
    assert json.loads(provctl("status", "712DM2Y", "--json").stdout) == api(provctl, "GET", "/hosts/712DM2Y/install")
    assert json.loads(provctl("status", "--json").stdout) == api(provctl, "GET", "/status")
    assert json.loads(provctl("log", "712DM2Y", "--json").stdout) == api(provctl, "GET", "/hosts/712DM2Y/events")
    assert json.loads(provctl("queue", "--json").stdout) == api(provctl, "GET", "/queue")
    cancelled = json.loads(provctl("cancel", "712DM2Y", "--yes", "--json").stdout)
    assert cancelled == api(provctl, "GET", "/hosts/712DM2Y")
    assert (cancelled["state"], cancelled["state_reason"]) == ("failed", "cancelled")


def test_install_asks_first_and_a_protected_host_needs_force(provctl, demo_data):
    before = events(provctl, "SN-WEB-0001")
    said_no = provctl("install", "SN-WEB-0001", "--no-wait", input="n\n", status=ExitStatus.ERROR)
    assert "host      SN-WEB-0001\nhostname  web01.example.com\nprofile   web_server\nstate     idle\n" in (
        said_no.stdout)
    assert "Install SN-WEB-0001 now? Its next PXE boot reinstalls it and wipes its disks [y/N]: " in said_no.stderr
    nobody = provctl("install", "SN-WEB-0001", "--no-wait", status=ExitStatus.USAGE)
    assert nobody.stderr.endswith("nothing on stdin to answer the question; not arming SN-WEB-0001 "
                                  "(pass --yes to skip it)\n")
    assert provctl.run("install", "SN-WEB-0001", status=ExitStatus.USAGE, input="").stdout.startswith("host ")
    assert state(provctl, "SN-WEB-0001") == ("idle", None) and events(provctl, "SN-WEB-0001") == before

    provctl("install", "SN-WEB-0001", "--no-wait", "--no-power", input="y\n")
    assert state(provctl, "SN-WEB-0001") == ("armed", None)
    provctl("cancel", "SN-WEB-0001", status=ExitStatus.USAGE)
    provctl("cancel", "SN-WEB-0001", input="no\n", status=ExitStatus.ERROR)
    assert state(provctl, "SN-WEB-0001") == ("armed", None)
    asked = provctl("cancel", "SN-WEB-0001", input="yes\n")
    assert "Cancel the install of SN-WEB-0001 (web01.example.com, armed)? [y/N]: " in asked.stderr
    assert state(provctl, "SN-WEB-0001") == ("failed", "cancelled")

    # A protected host needs --force.
    provctl("hosts", "edit", "712DM2Y", "--set", "protected=true")
    before = events(provctl, "712DM2Y")
    refused = provctl("install", "712DM2Y", "--yes", status=ExitStatus.CONFLICT)
    assert refused.stderr == ("provctl: host 712DM2Y is protected; arming it would reinstall it: "
                              "use --force if you mean it\n")
    assert "protected  yes\n" in refused.stdout
    assert state(provctl, "712DM2Y") == ("idle", None) and events(provctl, "712DM2Y") == before

    provctl("install", "712DM2Y", "--yes", "--no-wait", "--force")
    assert state(provctl, "712DM2Y") == ("armed", None)
    armed = [e for e in events(provctl, "712DM2Y") if e["kind"] == "armed"]
    assert "(forced: host is protected)" in armed[-1]["message"]


def test_follow_gives_up_after_timeout_with_exit_9(provctl, demo_data):
    started = time.monotonic()
    waited = provctl("install", "SN-WEB-0001", "--yes", "--no-power", "--timeout", "0.7",
                     status=ExitStatus.TIMED_OUT)
    assert time.monotonic() - started < 10
    assert waited.stderr == ("provctl: gave up waiting after 0.7s: host SN-WEB-0001 is armed; the install goes on "
                             "(`provctl log SN-WEB-0001 -f` follows it, `provctl cancel SN-WEB-0001` stops it)\n")
    timeline = [line for line in waited.stdout.splitlines() if LINE.match(line)]
    assert len(timeline) == 1 and "install armed by token tests, profile web_server" in timeline[0]
    assert state(provctl, "SN-WEB-0001") == ("armed", None)  # the install goes on

    # --json: the install document and the events seen; the timeline on stderr.
    provctl("cancel", "SN-WEB-0001", "--yes")
    out = provctl("install", "SN-WEB-0001", "--yes", "--no-power", "--timeout", "0.3", "--json",
                  status=ExitStatus.TIMED_OUT)
    document = json.loads(out.stdout)
    assert document["state"] == "armed" and document["install"]["active"] is True
    assert [e["kind"] for e in document["events"]] == ["armed"]
    assert "> install armed by token tests" in out.stderr and "gave up waiting" in out.stderr


# --------------------------------------------------------------------------- following real installs


def test_install_follows_the_installer_to_installed(provctl, demo_data, services, tmp_path):
    follower = Spawned(provctl, "install", "712DM2Y", "--yes", "--no-power", stderr=tmp_path / "stderr")
    follower.expect("> install armed by token tests, profile mysql_server")
    installer = Installer(provctl.url, install_token(services, "712DM2Y"))
    installer.boot(matching_report())
    follower.expect("> hardware matches the data source: serial 712DM2Y")
    installer.slot()
    installer.call("POST", "progress", json={"message": "installing packages (412 of 890)"})
    follower.expect("> installing packages (412 of 890)")
    installer.call("POST", "done", json={})
    outcome = follower.finish()

    assert outcome.code == ExitStatus.OK, outcome
    assert outcome.stderr == ""
    lines = outcome.stdout.splitlines()
    assert lines[-1] == "712DM2Y is installed"
    timeline = [line.split("> ", 1)[1] for line in lines if LINE.match(line)]
    # The worker's answer to the queued boot device change may come in the same poll.
    timeline = [t for t in timeline if not t.startswith("operation ")]
    assert [t.split(" ")[0:2] for t in timeline] == [
        ["install", "armed"], ["installer", "fetched"], ["hardware", "matches"], ["install", "slot"],
        ["installing", "packages"], ["install", "done:"], ["queued", "by"]]
    assert timeline[-2].startswith("install done: slot freed, token revoked, PXE answer is now local boot")
    assert state(provctl, "712DM2Y") == ("installed", None)

    # log prints the same lines (after the host's earlier history).
    logged = [line for line in provctl("log", "712DM2Y").stdout.splitlines() if "> operation " not in line]
    assert logged[-len(timeline):] == [line for line in lines if LINE.match(line) and "> operation " not in line]
    shown = provctl("status", "712DM2Y").stdout
    assert "outcome       installed\n" in shown and "booted from   00:26:b9:35:e9:aa\n" in shown
    assert "expires       -\n" in shown and re.search(r"^slot granted  \d{4}-.* UTC$", shown, re.M)


def test_hardware_mismatch_fails_the_install_with_exit_8(provctl, demo_data, services, tmp_path):
    follower = Spawned(provctl, "install", "712DM2Y", "--yes", "--no-power", "--json", stderr=tmp_path / "stderr")
    wait_for(lambda: state(provctl, "712DM2Y")[0] == "armed", "the host to be armed")
    installer = Installer(provctl.url, install_token(services, "712DM2Y"))
    installer.boot({**matching_report(), "serial": "712DM2X"}, expect=409)
    outcome = follower.finish()

    assert outcome.code == ExitStatus.INSTALL_FAILED, outcome
    reason = ("wrong serial number: the machine reports 712DM2X, the data source expects 712DM2Y")
    assert outcome.stderr.endswith(f"provctl: install of 712DM2Y failed: hw_mismatch: {reason}\n")
    assert f"> hardware mismatch: {reason}\n" in outcome.stderr  # the timeline, beside the JSON
    document = json.loads(outcome.stdout)
    assert (document["state"], document["state_reason"]) == ("failed", "hw_mismatch")
    assert document["install"]["outcome"] == "hw_mismatch" and document["install"]["active"] is False
    assert [e["kind"] for e in document["events"]] == ["armed", "kickstart", "hardware", "failed"]
    assert "power control" not in outcome.stderr  # --no-power

    # The same host's failure, followed in text: the installer gives up.
    follower = Spawned(provctl, "install", "712DM2Y", "--yes", "--no-power", stderr=tmp_path / "stderr2")
    follower.expect("> install armed")
    installer = Installer(provctl.url, install_token(services, "712DM2Y"))
    installer.call("GET", "ks")
    installer.call("POST", "failed", json={"message": "no disk found"})
    outcome = follower.finish()
    assert outcome.code == ExitStatus.INSTALL_FAILED
    assert outcome.stderr == ("provctl: install of 712DM2Y failed: installer_error: installer reported failure: "
                              "no disk found (booting → failed: installer_error)\n")
    assert "> installer reported failure: no disk found (booting → failed: installer_error)" in outcome.stdout


def test_log_follow_prints_new_events_until_ctrl_c(provctl, demo_data, services, tmp_path, arm):
    arm("712DM2Y")
    follower = Spawned(provctl, "log", "712DM2Y", "-f", stderr=tmp_path / "stderr")
    follower.expect("> host 712DM2Y added")
    follower.expect("> install armed by token tests")
    installer = Installer(provctl.url, install_token(services, "712DM2Y"))
    installer.call("GET", "ks")
    assert LINE.match(follower.expect("> installer fetched its kickstart (profile mysql_server)"))
    installer.call("POST", "progress", json={"message": "partitioning sda"})
    follower.expect("> partitioning sda")
    outcome = follower.interrupt()
    assert outcome.code == ExitStatus.OK, outcome
    assert outcome.stdout == provctl("log", "712DM2Y").stdout

    # -f --json: one event per line, from --since on.
    since = events(provctl, "712DM2Y")[-1]["id"]
    follower = Spawned(provctl, "log", "712DM2Y", "-f", "--json", "--since", str(since), stderr=tmp_path / "err2")
    installer.call("POST", "progress", json={"message": "installing packages"})
    first = json.loads(follower.expect("installing packages"))
    assert first["kind"] == "progress" and first["id"] > since and first["message"] == "installing packages"
    outcome = follower.interrupt()
    assert outcome.code == ExitStatus.OK and len(outcome.stdout.splitlines()) == 1


# --------------------------------------------------------------------------- the queue


def test_queue_and_status_with_a_waiting_host(settings, services, admin_token, home, demo_data, arm):
    services.vault  # the key exists before the workers start
    server = LiveServer(settings, workers=2, PROVISIOND_INSTALL_CAP="1")
    try:
        provctl = Provctl(url=server.url, token=admin_token, home=home)
        empty = provctl("queue").stdout
        assert empty == "install slots  0 of 1 in use\ninstalling     -\nwaiting        0\n"

        first = Installer(server.url, arm("712DM2Y"))
        first.boot(matching_report())
        first.slot()
        second = Installer(server.url, arm("SN-WEB-0001"))
        second.boot(WEB_REPORT)
        assert second.slot(expect=429).json()["position"] == 1

        shown = provctl("queue").stdout.splitlines()
        assert shown[:3] == ["install slots  1 of 1 in use", "installing     712DM2Y", "waiting        1"]
        assert shown[4].split() == ["POSITION", "CAP", "SERIAL", "WAITING", "QUEUED-AT", "STALE"]
        row = shown[5].split()
        assert row[:3] == ["1", "global", "SN-WEB-0001"] and re.fullmatch(r"\d+s", row[3]) and row[-1] == "no"
        body = json.loads(provctl("queue", "--json").stdout)
        assert body["cap"] == 1 and body["in_use"] == 1 and body["installing"] == ["712DM2Y"]
        assert [(w["serial"], w["position"], w["stale"]) for w in body["waiting"]] == [("SN-WEB-0001", 1, False)]

        summary = provctl("status").stdout
        assert "install slots  1 of 1 in use\nwaiting        1\n" in summary
        assert "queued      1\ninstalling  1\n" in summary
        assert json.loads(provctl("status", "--json").stdout)["states"]["queued"] == 1
        waiting = provctl("status", "SN-WEB-0001").stdout
        assert "state         queued\n" in waiting
        assert re.search(r"^queue         position 1 for the global cap, waiting \d+s$", waiting, re.M)
        assert re.search(r"^queued        \d{4}-.* UTC$", waiting, re.M) and "slot granted  -\n" in waiting

        # The slot frees: the waiter gets it on its next request.
        first.call("POST", "done", json={})
        second.slot()
        assert provctl("queue").stdout.splitlines()[:3] == [
            "install slots  1 of 1 in use", "installing     SN-WEB-0001", "waiting        0"]
    finally:
        server.stop()


# --------------------------------------------------------------------------- bad input, --json


def test_bad_input_has_its_exit_status_and_changes_nothing(provctl, demo_data, live_server, home):
    def snapshot() -> Any:
        return (api(provctl, "GET", "/hosts"), {s: events(provctl, s) for s in ("712DM2Y", "SN-WEB-0001")})

    before = snapshot()
    for args in (["install", "NOPE", "--yes"], ["install", "NOPE", "--yes", "--no-wait"], ["cancel", "NOPE", "--yes"],
                 ["cancel", "NOPE"], ["log", "NOPE"], ["log", "NOPE", "-f"], ["status", "NOPE"]):
        out = provctl(*args, status=ExitStatus.NOT_FOUND)
        assert out.stderr == "provctl: no host with serial number 'NOPE'\n", args

    no_token = Provctl(url=live_server.url, token=None, home=home)
    bad_token = Provctl(url=live_server.url, token="pvd_not_a_token", home=home)
    for args in (["install", "712DM2Y", "--yes"], ["install", "712DM2Y", "--yes", "--force", "--no-wait"],
                 ["cancel", "712DM2Y", "--yes"], ["log", "712DM2Y"], ["log", "712DM2Y", "-f"],
                 ["status"], ["status", "712DM2Y"], ["queue"]):
        assert no_token(*args, status=ExitStatus.UNAUTHORIZED).stderr.startswith("provctl: no API token"), args
        bad_token(*args, status=ExitStatus.UNAUTHORIZED)

    provctl("cancel", "712DM2Y", "--yes", status=ExitStatus.CONFLICT)  # nothing to cancel
    provctl("log", "712DM2Y", "--since", "-1", status=ExitStatus.USAGE)
    provctl("install", "712DM2Y", "--yes", "--timeout", "0", status=ExitStatus.USAGE)
    provctl("install", status=ExitStatus.USAGE)
    provctl("status", "712DM2Y", "extra", status=ExitStatus.USAGE)
    assert snapshot() == before

    provctl.run("install", "NOPE", "--yes", status=ExitStatus.NOT_FOUND)  # a real process: no traceback
    provctl.run("queue", env={"PROVISIOND_TOKEN": "x"}, status=ExitStatus.UNAUTHORIZED)
    assert snapshot() == before
