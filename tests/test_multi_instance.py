"""Several instances on one PostgreSQL, proven: two `serve`, two `worker` and
a `netboot`, each with its own data directory (as on separate machines:
their doorbells reach each other only through PostgreSQL's NOTIFY), driven
through the same installs from both HTTP instances at once.

- the install caps (global, and a rack's own) are exact across instances,
  and the full rack never holds back a host outside it;
- each power operation runs exactly once, and the gap between two commands
  to one BMC holds across workers;
- the netboot instance hands a host armed through another instance its
  installer entry over TFTP;
- a timed-out install is failed once, with no traceback anywhere;
- hooks fire once per event;
- a token revoked on one instance is refused by the other within the
  documented delay.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from provisiond import models
from provisiond.web.auth import TOKEN_CACHE_SECONDS
from tests.conftest import free_port, require

GAP_MS = 300
HOSTS = [f"SN-MI-{i:02d}" for i in range(8)]
RACK = HOSTS[:4]  # rack-m1, capped at 1


class Instance:
    """One provisiond process of one role, on its own data directory."""

    def __init__(self, root: Path, name: str, role: str, env: dict[str, str], port: int | None = None) -> None:
        self.name, self.role, self.port = name, role, port
        self.data = root / name
        self.data.mkdir(parents=True)
        shutil.copy(env["PROVISIOND_SECRET_KEY_FILE"], self.data / "secret.key")
        os.chmod(self.data / "secret.key", 0o600)
        self.log = root / f"{name}.log"
        self.env = {**os.environ, **env, "PROVISIOND_DATA_DIR": str(self.data),
                    "PROVISIOND_SECRET_KEY_FILE": str(self.data / "secret.key")}
        if port:
            self.env.update(PROVISIOND_HTTP_PORT=str(port), PROVISIOND_PUBLIC_URL=f"http://127.0.0.1:{port}")
        self.process = subprocess.Popen([sys.executable, "-m", "provisiond.cli.server", role], env=self.env,
                                        stdout=self.log.open("wb"), stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()}")
            if not self.port:
                return
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or busy starting
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def cluster(db_url, settings, services, tmp_path, admin_token):
    if db_url.startswith("sqlite"):
        pytest.skip("several instances share PostgreSQL; SQLite is one machine's")
    require(shutil.which("curl") is not None, "needs curl")
    require(shutil.which("tftp") is not None, "needs tftp-hpa's client (tftp)")
    services.vault  # noqa: B018  (the key every instance is given)
    hooks = tmp_path / "hooks" / "on-installed.d"
    hooks.mkdir(parents=True)
    fired = tmp_path / "fired"
    (hooks / "10-note").write_text(f"#!/bin/sh\necho \"$PROVISIOND_SERIAL\" >> {fired}\n")
    (hooks / "10-note").chmod(0o755)
    env = {
        "PROVISIOND_DATABASE_URL": db_url, "PROVISIOND_SECRET_KEY_FILE": str(settings.secret_key_file),
        "PROVISIOND_HOOKS_DIR": str(tmp_path / "hooks"), "PROVISIOND_FAKE_BMC_DIR": str(tmp_path / "bmc"),
        "PROVISIOND_INSTALL_CAP": "2", "PROVISIOND_BMC_MIN_GAP_MS": str(GAP_MS), "PROVISIOND_LOG_LEVEL": "INFO",
        "PROVISIOND_SLOT_RETRY_SECONDS": "1", "PROVISIOND_REAPER_INTERVAL_SECONDS": "1",
        "PROVISIOND_POWER_PACE_MS": "0", "PROVISIOND_HTTP_WORKERS": "2",
    }
    auth = {"Authorization": f"Bearer {admin_token}"}
    root = tmp_path / "machines"
    instances = [Instance(root, "serve-a", "serve", env, free_port()),
                 Instance(root, "serve-b", "serve", env, free_port()),
                 Instance(root, "worker-a", "worker", env), Instance(root, "worker-b", "worker", env),
                 Instance(root, "netboot-a", "netboot", {**env, "PROVISIOND_NETBOOT_ADDRESS": "127.0.0.1",
                                                         "PROVISIOND_TFTP_PORT": str(free_port())})]
    try:
        for instance in instances:
            instance.wait_ready()
        serve_a = instances[0]
        groups = {"name": "rack-m1", "install_cap": 1}
        assert requests.post(f"{serve_a.url}/api/v1/groups", json=groups, headers=auth).status_code == 201
        for index, serial in enumerate(HOSTS):
            document = {"serial": serial, "hostname": f"mi{index}.example.com", "macs": [f"52:54:00:4d:00:{index:02x}"],
                        "profile": "default", "bmc": {"type": "fake", "address": f"bmc{index}"},
                        "groups": ["rack-m1"] if serial in RACK else []}
            answer = requests.post(f"{serve_a.url}/api/v1/hosts", json=document, headers=auth)
            assert answer.status_code == 201, answer.text
        yield instances, auth, fired, tmp_path
    finally:
        for instance in instances:
            instance.stop()


def test_several_instances_share_one_postgresql_safely(cluster, services):
    instances, auth, fired, root = cluster
    serves = instances[:2]
    armed = requests.post(f"{serves[1].url}/api/v1/installs", json={"serials": HOSTS, "power": True}, headers=auth)
    assert armed.status_code == 201, armed.text
    netboots = [op for one in armed.json()["installs"] for op in one["power_operations"]]

    # Watch the caps the whole time, from the database.
    stop, worst = threading.Event(), {"installing": 0, "rack": 0}

    def watch() -> None:
        while not stop.is_set():
            with services.db.read() as session:
                installing = set(session.scalars(select(models.Host.serial)
                                                 .where(models.Host.state == "installing")))
            worst["installing"] = max(worst["installing"], len(installing))
            worst["rack"] = max(worst["rack"], len(installing & set(RACK)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    tokens = {serial: _token(services, serial) for serial in HOSTS}

    def call(instance, serial: str, step: str, **kwargs):  # type: ignore[no-untyped-def]
        url = f"{instance.url}/install/{tokens[serial]}/{step}"
        return requests.post(url, timeout=10, **kwargs) if step != "ks" else requests.get(url, timeout=10)

    # The netboot instance (its own machine, sharing only the database) hands
    # an armed host its installer entry, with the token armed on serve-b.
    netboot = instances[4]
    entry = root / "entry"
    fetched = subprocess.run(["tftp", "127.0.0.1", netboot.env["PROVISIOND_TFTP_PORT"], "-c", "get",
                              "pxelinux.cfg/01-52-54-00-4d-00-00", str(entry)], capture_output=True, text=True,
                             timeout=30)
    assert fetched.returncode == 0, fetched
    assert f"/install/{tokens[HOSTS[0]]}/ks" in entry.read_text(), entry.read_text()

    def booted(instance, serial: str) -> None:  # type: ignore[no-untyped-def]
        index = HOSTS.index(serial)
        assert call(instance, serial, "ks").status_code == 200
        report = {"serial": serial, "boot_mac": f"52:54:00:4d:00:{index:02x}", "nics": []}
        assert call(instance, serial, "pre-report", json=report).status_code == 200

    # First, in a known order across the two instances: the rack's one slot
    # taken on a, a second rack host held by the rack's cap on b, and a host
    # outside the rack granted on b while the rack is full (1 of 2 global slots).
    rack_one, rack_two, outside = RACK[0], RACK[1], HOSTS[-1]
    for serial, instance in ((rack_one, serves[0]), (rack_two, serves[1]), (outside, serves[1])):
        booted(instance, serial)
    assert call(serves[0], rack_one, "slot").status_code == 200
    held = call(serves[1], rack_two, "slot")
    assert held.status_code == 429 and "rack-m1" in held.text, held.text
    granted = call(serves[1], outside, "slot")
    assert granted.status_code == 200, f"a full rack held back a host outside it: {granted.text}"
    for serial in (rack_one, outside):
        assert call(serves[0], serial, "done").status_code == 200

    # Then the rest at once, each call to either instance.
    errors: list[str] = []

    def installer(serial: str) -> None:
        rng = random.Random(serial)
        try:
            if serial != rack_two:
                booted(rng.choice(serves), serial)
            while True:
                answer = call(rng.choice(serves), serial, "slot")
                if answer.status_code == 200:
                    break
                assert answer.status_code == 429, answer.text
                time.sleep(0.05 + rng.random() * 0.1)
            time.sleep(0.05 + rng.random() * 0.2)  # installing
            assert call(rng.choice(serves), serial, "done").status_code == 200
        except AssertionError as exc:
            errors.append(f"{serial}: {exc}")

    threads = [threading.Thread(target=installer, args=(serial,)) for serial in HOSTS
               if serial not in (rack_one, outside)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    stop.set()
    watcher.join()
    assert errors == []
    assert worst["installing"] <= 2 and worst["rack"] <= 1, worst

    # Every power operation (the netboots, then each done's boot device → disk) ran exactly once.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with services.db.read() as session:
            pending = session.scalar(select(func.count()).select_from(models.PowerOperation)
                                     .where(models.PowerOperation.status.in_(("queued", "running"))))
        if not pending:
            break
        time.sleep(0.2)
    with services.db.read() as session:
        operations = session.scalars(select(models.PowerOperation)).all()
    assert len(operations) == 2 * len(HOSTS) and all(op.status == "done" for op in operations)
    assert all(op.attempts == 1 for op in operations)
    assert sorted(op.id for op in operations if op.argument == "netboot") == sorted(netboots)
    for index, serial in enumerate(HOSTS):
        actions = json.loads((root / "bmc" / f"{serial}.json").read_text())["actions"]
        seen = [a["action"] for a in actions]  # a machine that is off is powered on, one that runs is reset
        assert seen in (["bootdev pxe", "power on", "bootdev disk persistent"],
                        ["bootdev pxe", "power reset", "bootdev disk persistent"]), (serial, actions)
        times = [a["time"] for a in actions]
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert min(gaps) >= GAP_MS / 1000 * 0.95, (serial, gaps)  # across workers too

    # Hooks fired once per event, by whichever worker claimed them.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_lines(fired)) < len(HOSTS):
        time.sleep(0.2)
    assert sorted(_lines(fired)) == sorted(HOSTS)

    # A silent install times out: failed once, whichever reaper got it, and no traceback anywhere.
    late = HOSTS[0]
    assert requests.post(f"{serves[0].url}/api/v1/hosts/{late}/install", json={"force": True},
                         headers=auth).status_code == 201
    with services.db.write() as session:
        session.execute(models.Install.__table__.update().where(models.Install.active.is_(True))
                        .values(expires_at=models.utcnow()))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = requests.get(f"{serves[0].url}/api/v1/hosts/{late}", headers=auth).json()["state"]
        if state == "failed":
            break
        time.sleep(0.2)
    time.sleep(2.5)  # both reapers have passed again
    events = requests.get(f"{serves[1].url}/api/v1/hosts/{late}/events", headers=auth).json()["events"]
    assert sum(1 for e in events if e["kind"] == "failed" and "timeout" in e["message"]) == 1
    for instance in instances:
        assert "Traceback" not in instance.log.read_text(), (instance.name, instance.log.read_text()[-3000:])


def test_a_token_revoked_on_one_instance_is_refused_by_the_other(cluster):
    instances, auth, _fired, _root = cluster
    a, b = instances[:2]
    created = requests.post(f"{a.url}/api/v1/tokens", json={"name": "short", "role": "viewer"}, headers=auth).json()
    viewer = {"Authorization": f"Bearer {created['token']}"}
    for _ in range(4):  # both of b's workers have it cached
        assert requests.get(f"{b.url}/api/v1/hosts", headers=viewer).status_code == 200
    assert requests.delete(f"{a.url}/api/v1/tokens/short", headers=auth).status_code == 204
    revoked_at = time.monotonic()
    assert requests.get(f"{a.url}/api/v1/hosts", headers=viewer).status_code in (200, 401)
    # Past the documented delay (each HTTP worker caches a credential for
    # TOKEN_CACHE_SECONDS), every request to the other instance is refused.
    time.sleep(max(0.0, revoked_at + TOKEN_CACHE_SECONDS + 0.5 - time.monotonic()))
    answers = [requests.get(f"{b.url}/api/v1/hosts", headers=viewer).status_code for _ in range(8)]
    assert answers == [401] * 8, answers


def _token(services, serial: str) -> str:
    with services.db.read() as session:
        sealed = session.scalar(select(models.Install.token_sealed).join(models.Host)
                                .where(models.Host.serial == serial, models.Install.active.is_(True)))
    return services.vault.decrypt(sealed)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_the_gap_between_commands_to_one_bmc_holds_across_workers(cluster):
    """Two operations to one BMC, queued back to back, carried out by two
    different worker processes (the other one stopped with SIGSTOP): the
    second worker waits out bmc_min_gap_ms from the first one's command,
    which it knows only from the database."""
    import signal

    instances, auth, _fired, root = cluster
    serve, worker_a, worker_b = instances[0], instances[2], instances[3]
    serial = HOSTS[-1]

    def reset() -> None:
        answer = requests.post(f"{serve.url}/api/v1/hosts/{serial}/power", json={"action": "reset"}, headers=auth)
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if requests.get(f"{serve.url}{answer.headers['Location']}", headers=auth).json()["status"] == "done":
                return
            time.sleep(0.01)
        raise AssertionError("the power operation did not finish")

    os.kill(worker_b.process.pid, signal.SIGSTOP)
    try:
        reset()  # by worker-a: the only one running
        os.kill(worker_a.process.pid, signal.SIGSTOP)
        os.kill(worker_b.process.pid, signal.SIGCONT)
        reset()  # by worker-b, at once
    finally:
        os.kill(worker_a.process.pid, signal.SIGCONT)
        os.kill(worker_b.process.pid, signal.SIGCONT)
    first, second = json.loads((root / "bmc" / f"{serial}.json").read_text())["actions"][-2:]
    assert (first["pid"], second["pid"]) == (worker_a.process.pid, worker_b.process.pid)
    assert second["time"] - first["time"] >= GAP_MS / 1000 * 0.95, (first, second)
