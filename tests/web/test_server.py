"""The embedded gunicorn: HTTP workers end with their master."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests

from tests.conftest import LiveServer


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_with_a_killed_master_and_a_restart_gets_the_port(settings, services):
    services.vault  # noqa: B018
    server = LiveServer(settings)  # 2 workers; /healthz answers once the first is up
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 20
        while len(workers := children(server.process.pid)) < 2:
            assert time.monotonic() < deadline, f"gunicorn started {len(workers)} of 2 workers"
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "HTTP workers outlived their master"
            time.sleep(0.1)
    finally:  # whatever failed, leave nothing running
        server.stop()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    again = LiveServer(settings, port=server.port)
    try:
        assert requests.get(f"{again.url}/healthz", timeout=5).ok
    finally:
        again.stop()


def test_a_worker_boots_when_its_database_warm_up_fails(tmp_path, caplog) -> None:
    """The warm-up is a speed-up only: a database that does not answer yet
    is logged and the worker goes on (its first request connects)."""
    from types import SimpleNamespace

    from provisiond.config import load_settings
    from provisiond.services import Services
    from provisiond.web.server import _warm_up

    services = Services.build(load_settings(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "database_url": "postgresql://postgres@127.0.0.1:9/absent"}))
    try:
        _warm_up(SimpleNamespace(pid=1234, wsgi=SimpleNamespace(extensions={"provisiond": services})))
    finally:
        services.db.dispose()
    assert "worker 1234: database warm-up failed" in caplog.text


def test_an_http_worker_wakes_the_power_worker_in_the_master(settings, services, demo_data, admin_token):
    """An operation queued by a (forked) HTTP worker rings the master's power
    bell: it is carried out at once, not at the next poll (an hour here)."""
    server = LiveServer(settings, PROVISIOND_POWER_POLL_MS="3600000", PROVISIOND_BMC_MIN_GAP_MS="0")
    try:
        headers = {"Authorization": f"Bearer {admin_token}"}
        time.sleep(0.5)  # the power worker's first pass found nothing; it sleeps on the bell
        queued = requests.post(f"{server.url}/api/v1/hosts/712DM2Y/power", json={"action": "on"},
                               headers=headers, timeout=10)
        assert queued.status_code == 202, queued.text
        deadline = time.monotonic() + 20
        while (status := requests.get(f"{server.url}{queued.headers['Location']}", headers=headers,
                                      timeout=10).json()["status"]) not in ("done", "failed"):
            assert time.monotonic() < deadline, "the power worker slept through the bell"
            time.sleep(0.05)
        assert status == "done"
    finally:
        server.stop()
