"""provisiond.metrics: the state read from the database as the lifecycle
moves (scraped through ``/metrics``), a database that does not answer, and
the counters of several processes added up through the machine's metrics
directory (a real ``provisiond serve`` with two HTTP workers, and a separate
process that counts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from provisiond.db import Database
from provisiond.install.slots import Limits
from provisiond.metric_files import MULTIPROC_ENV
from provisiond.metrics import DatabaseCollector, exposition
from provisiond.states import HostState
from tests.conftest import LiveServer, Samples, matching_report, parse_metrics, scrape
from tests.conftest import sample as value


# --------------------------------------------------------------------------- state from the database


def _through_the_slot(client: Any, token: str, report: dict[str, Any]) -> int:
    assert client.get(f"/install/{token}/ks").status_code == 200
    assert client.post(f"/install/{token}/pre-report", json=report).status_code == 200
    return int(client.post(f"/install/{token}/slot").status_code)


def test_hosts_slots_queues_and_installs_follow_the_lifecycle(client: Any, auth: dict[str, str],
                                                               viewer: dict[str, str], demo_data: None,
                                                               arm: Any) -> None:
    before = scrape(client, viewer)
    assert {state.value: value(before, "provisiond_hosts", state=state.value) for state in HostState} == {
        **{state.value: 0 for state in HostState}, "idle": 3}
    assert value(before, "provisiond_installs", outcome="active", reason="") == 0
    assert value(before, "provisiond_installs", outcome="failed", reason="hw_mismatch") == 0

    # rack-a1 gets a cap of one; both of its hosts ask for a slot.
    assert client.patch("/api/v1/groups/rack-a1", json={"install_cap": 1}, headers=auth).status_code == 200
    first, second = arm("712DM2Y"), arm("SN-WEB-0001")
    assert value(scrape(client, viewer), "provisiond_hosts", state="armed") == 2
    assert _through_the_slot(client, first, matching_report()) == 200
    assert _through_the_slot(client, second, {"serial": "SN-WEB-0001", "boot_mac": "52:54:00:00:00:01",
                                              "nics": [], "cpus": 4, "memory_mib": 8192}) == 429
    during = scrape(client, viewer)
    assert (value(during, "provisiond_hosts", state="installing"), value(during, "provisiond_hosts", state="queued"),
            value(during, "provisiond_hosts", state="idle")) == (1, 1, 1)
    rack, everywhere = {"cap": "group", "group": "rack-a1"}, {"cap": "global", "group": ""}
    assert [value(during, name, **rack) for name in ("provisiond_install_slots", "provisiond_install_slots_in_use",
                                                     "provisiond_install_queue_length")] == [1, 1, 1]
    assert [value(during, name, **everywhere) for name in ("provisiond_install_slots",
                                                           "provisiond_install_slots_in_use",
                                                           "provisiond_install_queue_length")] == [55, 1, 0]
    assert value(during, "provisiond_installs", outcome="active", reason="") == 2

    assert client.post(f"/install/{first}/done").status_code == 200
    assert client.post("/api/v1/hosts/SN-WEB-0001/cancel", headers=auth).status_code == 200
    after = scrape(client, viewer)
    assert (value(after, "provisiond_hosts", state="installed"), value(after, "provisiond_hosts", state="failed"),
            value(after, "provisiond_hosts", state="queued")) == (1, 1, 0)
    assert value(after, "provisiond_install_slots_in_use", **rack) == 0
    assert value(after, "provisiond_install_queue_length", **rack) == 0
    assert value(after, "provisiond_installs", outcome="installed", reason="") == 1
    assert value(after, "provisiond_installs", outcome="failed", reason="cancelled") == 1
    assert value(after, "provisiond_installs", outcome="active", reason="") == 0


def test_a_database_that_does_not_answer_still_gives_the_counters(tmp_path: Path) -> None:
    broken = Database(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables: every query fails
    try:
        body, _ = exposition(None, DatabaseCollector(broken, Limits(cap=5, retry_seconds=30, stale_seconds=300)))
    finally:
        broken.dispose()
    samples = parse_metrics(body.decode())
    assert value(samples, "provisiond_database_up") == 0
    assert ("provisiond_hosts", frozenset({("state", "idle")})) not in samples
    assert ("provisiond_dhcp_packets_total", frozenset({("outcome", "answered")})) in samples


# --------------------------------------------------------------------------- several processes, one machine

REFUSE_ONE_WRITE = """
import dataclasses, socket, sys
from pathlib import Path

from provisiond.metric_files import prepare

prepare(Path(sys.argv[1]))  # as the provisiond commands do, before prometheus_client is imported

from provisiond.config import load_settings
from provisiond.netboot.tftp import TftpService
from provisiond.services import Services

settings = dataclasses.replace(load_settings(), netboot_address="127.0.0.1", tftp_port=0)
service = TftpService(Services.build(settings))
service.start()
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
    client.settimeout(10)
    client.sendto(b"\\x00\\x02f513.bin\\x00octet\\x00", service.address)
    assert client.recvfrom(1024)[0][:4] == b"\\x00\\x05\\x00\\x02"  # access violation: counted before it was sent
service.stop()
"""


def _refuse_a_write_in_another_process(settings: Any) -> None:
    environment = {**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir),
                   "PROVISIOND_DATABASE_URL": settings.database_url}
    environment.pop(MULTIPROC_ENV, None)
    done = subprocess.run([sys.executable, "-c", REFUSE_ONE_WRITE, str(settings.run_dir)], env=environment,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _scrape(server: LiveServer, headers: dict[str, str]) -> Samples:
    response = requests.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return parse_metrics(response.text)


def test_serve_adds_up_the_counters_of_every_process_of_the_machine(settings: Any, services: Any,
                                                                    viewer: dict[str, str]) -> None:
    """``provisiond serve`` with two HTTP workers, and a TFTP service in a
    process of its own that refuses a write and exits: each HTTP worker's
    scrape shows that refusal (its file stays after its process ended);
    the database's state is there too. The next start of the machine's
    provisiond, with no process left using the directory, begins at 0."""
    services.vault  # noqa: B018  (the key exists before the workers start)
    directory = settings.run_dir / "metrics"
    server = LiveServer(settings, workers=2, role="serve")
    try:
        assert directory.is_dir()
        _refuse_a_write_in_another_process(settings)
        scrapes = [_scrape(server, viewer) for _ in range(8)]  # fresh connections: both workers answer some
        assert {value(s, "provisiond_tftp_requests_total", outcome="refused") for s in scrapes} == {1}
        assert {value(s, "provisiond_hosts", state="idle") for s in scrapes} == {0}
        assert {value(s, "provisiond_database_up") for s in scrapes} == {1}
        _refuse_a_write_in_another_process(settings)  # the HTTP workers still run: nothing is cleared
        assert value(_scrape(server, viewer), "provisiond_tftp_requests_total", outcome="refused") == 2
    finally:
        server.stop()
    assert list(directory.glob("counter_*.db"))
    again = LiveServer(settings, workers=1, role="serve")
    try:
        assert value(_scrape(again, viewer), "provisiond_tftp_requests_total", outcome="refused") == 0
    finally:
        again.stop()
