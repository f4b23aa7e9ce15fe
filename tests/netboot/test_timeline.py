"""netboot.timeline: lines queued from a serving thread reach the hosts'
timelines in batches, deduplicated within a window when one is set."""

from __future__ import annotations

import datetime as dt
from typing import Any

from provisiond.models import utcnow
from provisiond.netboot.timeline import Timeline
from provisiond.services import Services


def lines(client: Any, auth: dict[str, str], serial: str, kind: str) -> list[str]:
    response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
    assert response.status_code == 200, response.get_json()
    return [e["message"] for e in response.get_json()["events"] if e["kind"] == kind]


def test_without_a_window_every_line_is_written(services: Services, client: Any, auth: dict[str, str],
                                                demo_data: None) -> None:
    timeline = Timeline(services.db, "tftp")
    now = utcnow()
    try:
        for _ in range(3):
            assert timeline.record("712DM2Y", "TFTP: served x", now, {"file": "x"})
        timeline.record("no-such-serial", "TFTP: served y", now)  # a host deleted meanwhile: dropped, no error
        timeline.flush()
    finally:
        timeline.close()
    assert lines(client, auth, "712DM2Y", "tftp") == ["TFTP: served x"] * 3


def test_a_window_writes_an_identical_line_once_per_host(services: Services, client: Any, auth: dict[str, str],
                                                         demo_data: None) -> None:
    timeline = Timeline(services.db, "dhcp", window=dt.timedelta(seconds=60))
    now = utcnow()
    try:
        assert timeline.record("712DM2Y", "DHCP: offered", now)
        assert not timeline.record("712DM2Y", "DHCP: offered", now + dt.timedelta(seconds=59))
        assert timeline.record("SN-WEB-0001", "DHCP: offered", now)  # another host
        assert timeline.record("712DM2Y", "DHCP: acknowledged", now)  # another line
        assert timeline.record("712DM2Y", "DHCP: offered", now + dt.timedelta(seconds=60))  # the window has passed
    finally:
        timeline.close()  # writes what was queued before it returns
    assert lines(client, auth, "712DM2Y", "dhcp") == ["DHCP: offered", "DHCP: acknowledged", "DHCP: offered"]
    assert lines(client, auth, "SN-WEB-0001", "dhcp") == ["DHCP: offered"]
