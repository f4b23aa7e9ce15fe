"""The cap holds exactly under load: 300 simulated installers race for
slots (cap 10) against `provisiond serve` with 4 gunicorn workers, on SQLite
and on PostgreSQL, while a sampler watches the database."""

import random
import threading
import time

import requests
from sqlalchemy import func, select

from provisiond import models
from provisiond.inventory.hosts import ImportRow, import_hosts
from provisiond.inventory.schema import UNSET, parse_host
from tests.conftest import LiveServer

INSTALLERS = 300
CAP = 10


def make_hosts(services) -> dict[str, str]:
    rows = [ImportRow(parse_host({"serial": f"LOAD{i:04d}", "hostname": f"load{i:04d}",
                                  "macs": [f"52:54:01:00:{i // 256:02x}:{i % 256:02x}"], "profile": "default"},
                                 {"default"})[0], UNSET, f"load:{i}") for i in range(INSTALLERS)]
    tokens = {}
    with services.db.write() as session:
        import_hosts(session, rows, services.vault, "load")
    now = models.utcnow()
    with services.db.write() as session:
        for row in rows:
            tokens[row.spec.serial] = services.lifecycle.arm(session, row.spec.serial, now, "load test").token
    return tokens


def installer(url: str, serial: str, mac: str, token: str, outcome: dict, errors: list) -> None:
    base = f"{url}/install/{token}"
    http = requests.Session()
    try:
        assert http.get(f"{base}/ks", timeout=60).status_code == 200
        report = {"serial": serial, "boot_mac": mac, "nics": [], "cpus": 2, "memory_mib": 2048}
        assert http.post(f"{base}/pre-report", json=report, timeout=60).status_code == 200
        waits = 0
        while True:
            answer = http.post(f"{base}/slot", timeout=60)
            if answer.status_code == 200:
                break
            assert answer.status_code == 429, answer.text
            assert "concurrent install limit 10 reached: position" in answer.json()["message"]
            waits += 1
            time.sleep(int(answer.headers["Retry-After"]) * random.uniform(1.0, 1.2))  # honoured, never early
        time.sleep(random.uniform(0.05, 0.2))  # "installing"
        assert http.post(f"{base}/done", timeout=60).status_code == 200
        outcome[serial] = waits
    except Exception as exc:  # reported by the test thread
        errors.append(f"{serial}: {exc!r}")


def test_cap_holds_under_300_racing_installers(settings, services):
    tokens = make_hosts(services)
    server = LiveServer(settings, workers=4, PROVISIOND_INSTALL_CAP=str(CAP), PROVISIOND_SLOT_RETRY_SECONDS="5")
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            with services.db.read() as session:
                count = session.scalar(select(func.count()).select_from(models.Host)
                                       .where(models.Host.state == "installing"))
            peak = max(peak, count)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    outcome: dict[str, int] = {}
    errors: list[str] = []
    try:
        threads = [threading.Thread(target=installer, args=(server.url, serial,
                                    f"52:54:01:00:{i // 256:02x}:{i % 256:02x}", tokens[serial], outcome, errors))
                   for i, serial in enumerate(sorted(tokens))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        stop.set()
        sampler.join()
        server.stop()
    assert errors == []
    assert len(outcome) == INSTALLERS
    assert 1 <= peak <= CAP, peak
    assert sum(outcome.values()) > 0, "nobody ever waited: the cap was not exercised"
    with services.db.read() as session:
        states = dict(session.execute(select(models.Host.state, func.count()).group_by(models.Host.state)).all())
        active = session.scalar(select(func.count()).select_from(models.Install).where(models.Install.active))
    assert states == {"installed": INSTALLERS}
    assert active == 0
