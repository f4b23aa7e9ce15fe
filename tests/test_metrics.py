"""provisiond.metrics: the state read from the database as the lifecycle
moves (scraped through ``/metrics``), and a database that does not answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provisiond.db import Database
from provisiond.install.slots import Limits
from provisiond.metrics import DatabaseCollector, exposition
from provisiond.states import HostState
from tests.conftest import matching_report, parse_metrics, scrape
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
    assert value(before, "provisiond_installs_started_total") == 0
    assert value(before, "provisiond_installs_finished_total", outcome="failed", reason="hw_mismatch") == 0

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
    assert value(during, "provisiond_installs_started_total") == 2

    assert client.post(f"/install/{first}/done").status_code == 200
    assert client.post("/api/v1/hosts/SN-WEB-0001/cancel", headers=auth).status_code == 200
    after = scrape(client, viewer)
    assert (value(after, "provisiond_hosts", state="installed"), value(after, "provisiond_hosts", state="failed"),
            value(after, "provisiond_hosts", state="queued")) == (1, 1, 0)
    assert value(after, "provisiond_install_slots_in_use", **rack) == 0
    assert value(after, "provisiond_install_queue_length", **rack) == 0
    assert value(after, "provisiond_installs_finished_total", outcome="installed", reason="") == 1
    assert value(after, "provisiond_installs_finished_total", outcome="failed", reason="cancelled") == 1
    assert value(after, "provisiond_installs_started_total") == 2


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
