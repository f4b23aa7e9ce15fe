"""The power API: operations are queued (202 + Location), never run in the
request; bad input is refused naming the field and changes nothing; batch
arming is all or none and paces the power-ons."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.inventory.conftest import assert_error, snapshot  # noqa: F401  (snapshot is a fixture)


def test_power_and_bootdev_are_queued_with_202_and_can_be_polled(client, auth, demo_data):
    answer = client.post("/api/v1/hosts/712DM2Y/power", json={"action": "reset"}, headers=auth)
    assert answer.status_code == 202
    body = answer.get_json()
    assert answer.headers["Location"] == f"/api/v1/power/{body['id']}"
    assert (body["serial"], body["action"], body["argument"], body["status"]) == ("712DM2Y", "power", "reset", "queued")
    assert body["description"] == "power reset (power on if off)" and body["requested_by"] == "token tests"
    assert client.get(answer.headers["Location"], headers=auth).get_json() == body

    boot = client.post("/api/v1/hosts/712DM2Y/bootdev", json={"device": "disk", "persistent": True}, headers=auth)
    assert boot.status_code == 202
    assert boot.get_json()["description"] == "set the boot device to disk (persistent)"
    listed = client.get("/api/v1/hosts/712DM2Y/power", headers=auth).get_json()
    assert [op["id"] for op in listed["operations"]] == [boot.get_json()["id"], body["id"]]


@pytest.mark.parametrize("path, document, status, field, words", [
    ("power", {"action": "explode"}, 400, "action", "expected one of on, off, reset, status, netboot, not 'explode'"),
    ("power", {}, 400, "action", "expected one of on, off, reset, status, netboot"),
    ("power", {"action": "on", "force": True}, 400, "force", "unknown field"),
    ("bootdev", {"device": "usb"}, 400, "device", "expected one of pxe, disk, status, not 'usb'"),
    ("bootdev", {"device": 7}, 400, "device", "expected one of pxe, disk, status, not 7"),
    ("bootdev", {"device": "pxe", "persistent": "yes"}, 400, "persistent", "expected true or false"),
    ("bootdev", {"device": "status", "persistent": True}, 400, "persistent", "only applies when setting"),
])
def test_bad_operations_are_refused_and_change_nothing(client, auth, demo_data, snapshot, path, document, status,
                                                       field, words):
    before = snapshot()
    answer = client.post(f"/api/v1/hosts/712DM2Y/{path}", json=document, headers=auth)
    assert_error(answer, status, field, contains=words)
    assert snapshot() == before


def test_unknown_host_no_bmc_and_unknown_operation(client, auth, demo_data, snapshot):
    before = snapshot()
    assert_error(client.post("/api/v1/hosts/NOPE/power", json={"action": "on"}, headers=auth), 404)
    no_bmc = client.post("/api/v1/hosts/SN-NEW-0001/power", json={"action": "on"}, headers=auth)
    assert_error(no_bmc, 409, contains="host SN-NEW-0001 has no BMC (bmc.type) in the data source")
    assert_error(client.post("/api/v1/hosts/712DM2Y/power", data="{", headers={**auth, "Content-Type": "application/json"}), 400,
                 contains="not valid JSON")
    assert snapshot() == before
    assert_error(client.get("/api/v1/power/999", headers=auth), 404, contains="no power operation 999")
    assert_error(client.get("/api/v1/power/abc", headers=auth), 404)


def test_arming_with_power_queues_pxe_then_reset_and_without_a_bmc_arms_nothing(client, auth, demo_data, snapshot):
    armed = client.post("/api/v1/hosts/712DM2Y/install", json={"power": True}, headers=auth)
    assert armed.status_code == 201
    ids = armed.get_json()["power_operations"]
    ops = [client.get(f"/api/v1/power/{i}", headers=auth).get_json() for i in ids]
    assert [(op["action"], op["argument"]) for op in ops] == [("power", "netboot")]
    assert ops[0]["description"] == ("boot from the network once (boot device pxe for the next boot, "
                                     "then reset or power on)")
    assert all(op["install_id"] == armed.get_json()["install_id"] for op in ops)

    before = snapshot()
    refused = client.post("/api/v1/hosts/SN-NEW-0001/install", json={"power": True}, headers=auth)
    assert_error(refused, 409, contains="--no-power")
    assert snapshot() == before  # not armed either: one transaction
    assert_error(client.post("/api/v1/hosts/SN-NEW-0001/install", json={"power": "yes"}, headers=auth), 400, "power")


def test_a_batch_with_a_host_without_a_bmc_arms_none_of_them(client, auth, demo_data, snapshot):
    before = snapshot()
    refused = client.post("/api/v1/installs", json={"serials": ["712DM2Y", "SN-NEW-0001"], "power": True,
                                                    "force": True}, headers=auth)
    assert_error(refused, 409, contains="host SN-NEW-0001 has no BMC")
    assert snapshot() == before  # 712DM2Y was armed and queued in the transaction, then rolled back


def test_a_batch_is_all_or_none_and_paces_power_ons(client, auth, demo_data, snapshot):
    client.patch("/api/v1/hosts/SN-WEB-0001", json={"protected": True}, headers=auth)
    before = snapshot()
    refused = client.post("/api/v1/installs", json={"serials": ["712DM2Y", "SN-WEB-0001"], "power": True},
                          headers=auth)
    assert_error(refused, 409, contains="host SN-WEB-0001 is protected")
    assert snapshot() == before  # 712DM2Y was not armed either
    for document, field in [({"serials": []}, "serials"), ({"serials": ["712DM2Y", "712DM2Y"]}, "serials"),
                            ({"serials": ["712DM2Y"], "pace_seconds": -1}, "pace_seconds"),
                            ({"serials": ["712DM2Y"], "pace_seconds": True}, "pace_seconds"),
                            ({"serials": "712DM2Y"}, "serials"), ({"serials": ["712DM2Y"], "now": 1}, "now")]:
        assert_error(client.post("/api/v1/installs", json=document, headers=auth), 400, field)
    assert snapshot() == before

    answer = client.post("/api/v1/installs", json={"serials": ["712DM2Y", "SN-WEB-0001"], "power": True,
                                                   "force": True, "pace_seconds": 30}, headers=auth)
    assert answer.status_code == 201
    installs = answer.get_json()["installs"]
    assert [i["serial"] for i in installs] == ["712DM2Y", "SN-WEB-0001"]
    first, second = ([client.get(f"/api/v1/power/{op}", headers=auth).get_json() for op in i["power_operations"]]
                     for i in installs)
    assert all(op["not_before"] is None for op in first)
    delays = {dt.datetime.fromisoformat(op["not_before"]) - dt.datetime.fromisoformat(op["created_at"])
              for op in second}
    assert delays == {dt.timedelta(seconds=30)}
