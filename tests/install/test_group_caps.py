"""Group caps: a full rack never holds back hosts outside it; positions and
messages say which cap holds a host; first come, first served within each
cap."""

from __future__ import annotations

import pytest

from provisiond.install.slots import GLOBAL, Standing, Waiter, standings
from tests.conftest import matching_report

WEB_REPORT = {"serial": "SN-WEB-0001", "boot_mac": "52:54:00:00:00:01", "nics": [], "cpus": 4, "memory_mib": 8192}
NEW_REPORT = {"serial": "SN-NEW-0001", "boot_mac": "52:54:00:00:00:02", "nics": []}


def booted(client, arm, serial, report):
    token = arm(serial)
    assert client.get(f"/install/{token}/ks").status_code == 200
    answer = client.post(f"/install/{token}/pre-report", json=report)
    assert answer.status_code == 200, answer.get_json()
    return token


def test_a_full_rack_never_holds_back_a_host_outside_it(client, auth, demo_data, arm, services):
    """The issue's case: global cap 2, rack-a1 capped at 1. A rack-a1 host
    holds a slot, a second rack-a1 host waits for its rack, and a host
    outside rack-a1 is granted the second global slot (it used to be
    refused: "concurrent install limit 2 reached: position 2")."""
    from provisiond.install.slots import Limits

    limits = services.lifecycle.limits
    object.__setattr__(services.lifecycle, "limits", Limits(2, limits.retry_seconds, limits.stale_seconds))
    assert client.patch("/api/v1/groups/rack-a1", json={"install_cap": 1}, headers=auth).status_code == 200
    first = booted(client, arm, "712DM2Y", matching_report())        # site-hz1, rack-a1
    second = booted(client, arm, "SN-WEB-0001", WEB_REPORT)         # site-hz1, rack-a1
    outside = booted(client, arm, "SN-NEW-0001", NEW_REPORT)        # site-hz1 only
    assert client.post(f"/install/{first}/slot").status_code == 200
    waiting = client.post(f"/install/{second}/slot")
    assert waiting.status_code == 429
    assert waiting.get_json()["message"] == "install limit 1 of group rack-a1 reached: position 1 in rack-a1, " \
                                            "retry in 1 s"
    granted = client.post(f"/install/{outside}/slot")
    assert granted.status_code == 200, granted.get_json()
    queue = client.get("/api/v1/queue", headers=auth).get_json()
    assert queue["caps"] == [{"group": None, "cap": 2, "in_use": 2}, {"group": "rack-a1", "cap": 1, "in_use": 1}]
    assert [(w["serial"], w["position"], w["held_by"]) for w in queue["waiting"]] == [("SN-WEB-0001", 1, "rack-a1")]
    # The rack's slot frees: its waiter is next, though the global cap is full again only with it.
    assert client.post(f"/install/{first}/done").status_code == 200
    assert client.post(f"/install/{second}/slot").status_code == 200


def W(install_id: int, *groups: int) -> Waiter:
    return Waiter(install_id, groups)


def test_standings_fifo_within_each_cap_and_no_hold_back_across_caps():
    caps = {GLOBAL: 3, 1: 1, 2: 2}
    in_use = {GLOBAL: 1, 1: 1, 2: 0}  # rack 1 is full
    waiters = [W(10, 1), W(11, 2), W(12, 1), W(13), W(14, 2), W(15)]
    result = standings(waiters, in_use, caps)
    assert result == [
        Standing(False, 1, 1),       # held by rack 1, first in its queue
        Standing(True),              # rack 2 and global have room: next
        Standing(False, 1, 2),       # rack 1 again, second in its queue (FIFO within the cap)
        Standing(True),              # no rack: the last global slot (rack-1 waiters reserve none)
        Standing(False, GLOBAL, 3),  # global full: behind 11 and 13, not behind rack-1's waiters
        Standing(False, GLOBAL, 4),
    ]


def test_a_waiter_held_by_one_group_does_not_reserve_the_others():
    """Site cap 2 (group 1) over racks 2 and 3; rack 2 is full: its waiter
    takes no site slot, so rack 3's waiter behind it is not held back."""
    caps = {GLOBAL: 10, 1: 2, 2: 1, 3: 1}
    in_use = {GLOBAL: 1, 1: 1, 2: 1, 3: 0}
    result = standings([W(20, 1, 2), W(21, 1, 3), W(22, 1, 3)], in_use, caps)
    assert result == [Standing(False, 2, 1), Standing(True), Standing(False, 1, 2)]  # 21 is ahead in the site


@pytest.mark.parametrize("used", [0, 1, 2])
def test_without_group_caps_the_global_queue_is_plain_fifo(used):
    result = standings([W(i) for i in range(5)], {GLOBAL: used}, {GLOBAL: 2})
    free = 2 - used
    assert [s.eligible for s in result] == [i < free for i in range(5)]
    assert [s.position for s in result if not s.eligible] == list(range(free + 1, 6))
