"""The SQL data source for hosts and the host routes of the admin API:
uniqueness, updates, deletes, events, and that a refused write changes
nothing."""

from __future__ import annotations

import logging
import pytest
from sqlalchemy import select

from provisiond import models
from provisiond.errors import Conflict, NotFound, ValidationError
from provisiond.inventory import hosts as store
from provisiond.inventory.bootplan import BootAction, plan_for_mac
from provisiond.inventory.schema import UNSET, parse_host

from .conftest import PROFILES, assert_error, create, host_doc, mac_for, minimal_doc


def events(services, serial: str | None = None) -> list[str]:
    with services.db.read() as session:
        query = select(models.Event.message).order_by(models.Event.id)
        if serial is not None:
            query = query.join(models.Host).where(models.Host.serial == serial)
        return list(session.scalars(query))


def raw_secret(services, serial: str) -> str | None:
    with services.db.read() as session:
        return session.scalar(select(models.Host.bmc_secret).where(models.Host.serial == serial))


# --------------------------------------------------------------------------- create and read


def test_create_show_and_list(client, auth, services):
    body = create(client, auth, host_doc(1))
    assert body["serial"] == "SN0001" and body["state"] == "idle"
    assert body["nics"][0] == {"mac": mac_for(1), "name": "eth0", "primary": True}
    assert body["bmc"]["password_set"] is False
    assert client.get("/api/v1/hosts/SN0001", headers=auth).get_json() == body
    assert client.get("/api/v1/hosts", headers=auth).get_json() == {"hosts": [body]}
    assert events(services, "SN0001") == ["host SN0001 added to the data source"]


def test_create_normalises_macs_and_hostname(client, auth):
    body = create(client, auth, minimal_doc(1, hostname="HOST1.Example.COM.", macs=["AABB.CCDD.EEF0", "AA-BB-CC-DD-EE-F2"]))
    assert body["hostname"] == "host1.example.com"
    assert [n["mac"] for n in body["nics"]] == ["aa:bb:cc:dd:ee:f0", "aa:bb:cc:dd:ee:f2"]
    assert client.get("/api/v1/hosts?q=host1", headers=auth).get_json()["hosts"][0]["serial"] == "SN0001"


def test_boot_plan_finds_the_host_by_any_of_its_macs(services, client, auth):
    create(client, auth, host_doc(1))  # two NICs: one plan, not one per joined row
    with services.db.kept_connection() as connection:
        for mac in (mac_for(1), mac_for(1, 1)):
            plan = plan_for_mac(connection, mac, vault=services.vault, profiles=services.profiles,
                                public_url="http://x")
            assert (plan.serial, plan.action, plan.ip) == ("SN0001", BootAction.LOCAL, "10.20.0.11"), plan
        unknown = plan_for_mac(connection, "52:54:00:ff:ff:ff", vault=services.vault, profiles=services.profiles,
                               public_url="http://x")
        assert (unknown.serial, unknown.action) == (None, BootAction.IGNORE)


# --------------------------------------------------------------------------- uniqueness


DUPLICATES = [
    # (how the second host copies the first, the field named, the status)
    ({"serial": "SN0001"}, "serial", 409),
    ({"nics": [{"mac": mac_for(1).upper().replace(":", "-")}]}, "nics", 409),
    ({"nics": [{"mac": mac_for(2)}, {"mac": mac_for(1, 1)}]}, "nics", 409),
    ({"hostname": "HOST1.example.com"}, "hostname", 409),
    ({"ip": "10.20.0.11"}, "ip", 409),
]


@pytest.mark.parametrize("copy, field, status", DUPLICATES, ids=[d[1] + str(i) for i, d in enumerate(DUPLICATES)])
def test_duplicate_on_create_is_refused(client, auth, snapshot, copy, field, status):
    create(client, auth, host_doc(1))
    before = snapshot()
    response = client.post("/api/v1/hosts", json=host_doc(2, **copy), headers=auth)
    body = assert_error(response, status, field)
    assert "SN0001" in body["message"]
    assert snapshot() == before


@pytest.mark.parametrize("copy, field, status", DUPLICATES[1:], ids=[d[1] for d in DUPLICATES[1:]])
def test_duplicate_on_update_is_refused(client, auth, snapshot, copy, field, status):
    create(client, auth, host_doc(1))
    create(client, auth, host_doc(2))
    before = snapshot()
    response = client.put("/api/v1/hosts/SN0002", json=host_doc(2, **copy), headers=auth)
    assert_error(response, status, field, contains="SN0001")
    response = client.patch("/api/v1/hosts/SN0002", json=copy, headers=auth)
    assert_error(response, status, field, contains="SN0001")
    assert snapshot() == before


def test_update_may_keep_its_own_values(client, auth, services):
    create(client, auth, host_doc(1))
    response = client.put("/api/v1/hosts/SN0001", json=host_doc(1, owner="dba"), headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["owner"] == "dba"
    assert events(services, "SN0001")[-1] == "host SN0001 edited: owner"


def test_check_unique_directly(services, client, auth):
    create(client, auth, host_doc(1))
    spec, _ = parse_host(host_doc(2, hostname="host1.example.com"), PROFILES)
    with services.db.read() as session:
        with pytest.raises(store.DuplicateValue) as info:
            store.check_unique(session, spec, None)
        assert info.value.field == "hostname" and info.value.status == 409
        own, _ = parse_host(host_doc(1), PROFILES)
        host_id = store.get_host(session, "SN0001").id
        store.check_unique(session, own, host_id)  # its own values are no clash
        with pytest.raises(store.DuplicateValue):
            store.check_unique(session, own, None)


def test_create_host_directly(services):
    spec, password = parse_host(host_doc(1, bmc={"address": "10.9.0.1", "password": "pw1"}), PROFILES)
    with services.db.write() as session:
        host = store.create_host(session, spec, password, services.vault)
        assert host.id is not None
    with services.db.write() as session, pytest.raises(Conflict) as info:
        store.create_host(session, spec, UNSET, services.vault)
    assert info.value.details["field"] == "serial"
    assert services.vault.decrypt(raw_secret(services, "SN0001")) == "pw1"


# --------------------------------------------------------------------------- updates


def test_update_that_swaps_nics(client, auth, services):
    create(client, auth, host_doc(1))
    swapped = [{"mac": mac_for(1, 1), "name": "eth0", "primary": True},
               {"mac": mac_for(1), "name": "eth1", "primary": False}]
    response = client.patch("/api/v1/hosts/SN0001", json={"nics": swapped}, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["nics"] == swapped
    assert client.get("/api/v1/hosts/SN0001", headers=auth).get_json()["nics"] == swapped
    with services.db.read() as session:
        assert store.load_record(session, "SN0001").primary_mac == mac_for(1, 1)
        assert session.scalar(select(models.Nic.id).where(models.Nic.mac == mac_for(1))) is not None
    assert events(services, "SN0001")[-1] == "host SN0001 edited: nics"


def test_only_primary_flag_changes(client, auth):
    create(client, auth, host_doc(1))
    flipped = [{"mac": mac_for(1), "name": "eth0", "primary": False},
               {"mac": mac_for(1, 1), "name": "eth1", "primary": True}]
    body = client.patch("/api/v1/hosts/SN0001", json={"nics": flipped}, headers=auth).get_json()
    assert body["nics"] == flipped


def test_a_mac_can_move_to_another_host(client, auth):
    create(client, auth, host_doc(1))
    create(client, auth, host_doc(2))
    moved = {"mac": mac_for(1, 1), "name": "eth9", "primary": False}
    assert_error(client.patch("/api/v1/hosts/SN0002", json={"nics": [{"mac": mac_for(2)}, moved]}, headers=auth),
                 409, "nics")
    response = client.patch("/api/v1/hosts/SN0001", json={"macs": [mac_for(1)], "nics": None}, headers=auth)
    assert response.status_code == 200, response.get_json()
    response = client.patch("/api/v1/hosts/SN0002", json={"nics": [{"mac": mac_for(2), "primary": True}, moved]},
                            headers=auth)
    assert response.status_code == 200, response.get_json()
    assert [n["mac"] for n in response.get_json()["nics"]] == [mac_for(2), mac_for(1, 1)]


def test_two_hosts_may_swap_hostnames_through_a_free_name(client, auth):
    create(client, auth, host_doc(1))
    create(client, auth, host_doc(2))
    for serial, name in (("SN0001", "tmp.example.com"), ("SN0002", "host1.example.com"),
                         ("SN0001", "host2.example.com")):
        response = client.patch(f"/api/v1/hosts/{serial}", json={"hostname": name}, headers=auth)
        assert response.status_code == 200, response.get_json()


def test_patch_merges_bmc_and_hardware(client, auth, services):
    create(client, auth, host_doc(1, bmc={"type": "ipmi", "address": "10.9.0.1", "user": "root",
                                          "password": "first-pw"}))
    body = client.patch("/api/v1/hosts/SN0001", json={"bmc": {"port": 6230}, "hardware": {"cpus": 8}},
                        headers=auth).get_json()
    assert body["bmc"] == {"type": "ipmi", "address": "10.9.0.1", "port": 6230, "user": "root", "password_set": True}
    assert body["hardware"]["cpus"] == 8 and body["hardware"]["memory_mib"] == 131072
    assert services.vault.decrypt(raw_secret(services, "SN0001")) == "first-pw"  # kept


def test_password_is_set_changed_and_cleared(client, auth, services, caplog):
    caplog.set_level(logging.DEBUG)
    create(client, auth, host_doc(1, bmc={"address": "10.9.0.1", "password": "first-pw"}))
    stored = raw_secret(services, "SN0001")
    assert stored and "first-pw" not in stored
    assert services.vault.decrypt(stored) == "first-pw"

    response = client.patch("/api/v1/hosts/SN0001", json={"bmc": {"password": "second-pw"}}, headers=auth)
    assert response.status_code == 200
    assert response.get_json()["bmc"]["password_set"] is True
    assert services.vault.decrypt(raw_secret(services, "SN0001")) == "second-pw"
    assert events(services, "SN0001")[-1] == "host SN0001 edited: bmc.password"

    client.put("/api/v1/hosts/SN0001", json=host_doc(1, bmc={"address": "10.9.0.1"}), headers=auth)
    assert services.vault.decrypt(raw_secret(services, "SN0001")) == "second-pw"  # no password key: kept

    body = client.patch("/api/v1/hosts/SN0001", json={"bmc": {"password": ""}}, headers=auth).get_json()
    assert body["bmc"]["password_set"] is False
    assert raw_secret(services, "SN0001") is None

    everything = caplog.text + " ".join(events(services))
    for word in ("first-pw", "second-pw"):
        assert word not in everything
        assert word not in client.get("/api/v1/hosts", headers=auth).get_data(as_text=True)


def test_put_cannot_change_the_serial(client, auth, snapshot):
    create(client, auth, host_doc(1))
    before = snapshot()
    assert_error(client.put("/api/v1/hosts/SN0001", json=host_doc(1, serial="SN0009"), headers=auth),
                 400, "serial")
    assert_error(client.patch("/api/v1/hosts/SN0001", json={"serial": "SN0009"}, headers=auth), 400, "serial")
    assert snapshot() == before


def test_an_unchanged_update_writes_no_event(client, auth, services):
    create(client, auth, host_doc(1, groups=[]))
    count = len(events(services))
    assert client.put("/api/v1/hosts/SN0001", json=host_doc(1), headers=auth).status_code == 200
    assert len(events(services)) == count


def test_update_event_lists_every_changed_field(client, auth, services):
    client.post("/api/v1/groups", json={"name": "g1"}, headers=auth)
    create(client, auth, host_doc(1))
    client.put("/api/v1/hosts/SN0001", headers=auth, json=host_doc(
        1, owner="dba", groups=["g1"], macs=[mac_for(1)], nics=None, hardware={"cpus": 2}))
    message = events(services, "SN0001")[-1]
    for field in ("owner", "groups", "nics", "expected_cpus", "expected_disks"):
        assert field in message


# --------------------------------------------------------------------------- delete


def test_delete(client, auth, services):
    create(client, auth, host_doc(1))
    response = client.delete("/api/v1/hosts/SN0001", headers=auth)
    assert response.status_code == 204
    assert_error(client.get("/api/v1/hosts/SN0001", headers=auth), 404)
    with services.db.read() as session:
        assert session.scalar(select(models.Nic.id)) is None
        assert session.scalar(select(models.host_groups.c.host_id)) is None
    assert events(services)[-1] == "host SN0001 removed from the data source"
    create(client, auth, host_doc(2, nics=host_doc(1)["nics"], hostname="host1.example.com", ip="10.20.0.11"))


def test_delete_removes_group_links_but_not_groups(client, auth, services):
    client.post("/api/v1/groups", json={"name": "g1"}, headers=auth)
    create(client, auth, host_doc(1, groups=["g1"]))
    assert client.delete("/api/v1/hosts/SN0001", headers=auth).status_code == 204
    assert client.get("/api/v1/groups/g1", headers=auth).get_json()["hosts"] == 0


def test_protected_host_needs_force(client, auth, snapshot):
    create(client, auth, host_doc(1, protected=True))
    before = snapshot()
    assert_error(client.delete("/api/v1/hosts/SN0001", headers=auth), 409, contains="protected")
    assert snapshot() == before
    assert client.delete("/api/v1/hosts/SN0001?force=true", headers=auth).status_code == 204


def test_delete_host_directly(services, client, auth):
    create(client, auth, host_doc(1))
    with services.db.write() as session:
        store.delete_host(session, "SN0001")
    with services.db.read() as session, pytest.raises(NotFound):
        store.get_host(session, "SN0001")


# --------------------------------------------------------------------------- errors through the API


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/hosts/NOPE"),
    ("PUT", "/api/v1/hosts/NOPE"),
    ("PATCH", "/api/v1/hosts/NOPE"),
    ("DELETE", "/api/v1/hosts/NOPE"),
    ("GET", "/api/v1/hosts/NOPE/kickstart"),
    ("GET", "/api/v1/hosts/NOPE/variables"),
])
def test_unknown_host_is_404(client, auth, snapshot, method, path):
    create(client, auth, host_doc(1))
    before = snapshot()
    body = assert_error(client.open(path, method=method, json=host_doc(2, serial="NOPE"), headers=auth), 404)
    assert body["error"] == "not_found" and "NOPE" in body["message"]
    assert snapshot() == before


BAD_INPUT = [
    ({"nics": [{"mac": "52:54:00:zz:00:01"}]}, "nics[0].mac"),
    ({"nics": [{"mac": "01:00:5e:00:00:01"}]}, "nics[0].mac"),
    ({"hostname": "under_score.example.com"}, "hostname"),
    ({"hostname": "x" * 64}, "hostname"),
    ({"ip": "10.20.0.256"}, "ip"),
    ({"ip": "10.20.0.0"}, "ip"),
    ({"gateway": "10.99.0.1"}, "gateway"),
    ({"prefix": 40}, "prefix"),
    ({"dns": ["8.8.8"]}, "dns"),
    ({"profile": "nonexistent"}, "profile"),
    ({"groups": ["no-such-group"]}, "groups"),
    ({"groups": ["g1", "g1"]}, "groups"),
    ({"bmc": {"type": "ipmi", "address": None}}, "bmc.address"),  # PATCH merges bmc: clear it explicitly
    ({"bmc": {"address": "10.9.0.1", "port": "http"}}, "bmc.port"),
    ({"hardware": {"cpus": -4}}, "hardware.cpus"),
    ({"hardware": {"cpus": 1e400}}, "hardware.cpus"),
    ({"hardware": {"disks": [{"name": "sda", "size_gb": 0}]}}, "hardware.disks[0].size_gb"),
    ({"variables": {"2fast": 1}}, "variables.2fast"),
    ({"variables": []}, "variables"),
    ({"nics": [{"mac": mac_for(2), "name": "n" * 33}]}, "nics[0].name"),
    ({"owner": "o" * 129}, "owner"),
    ({"unknown": 1}, "unknown"),
]


@pytest.mark.parametrize("change, field", BAD_INPUT, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_INPUT)])
def test_bad_input_is_400_naming_the_field_and_changes_nothing(client, auth, snapshot, change, field):
    client.post("/api/v1/groups", json={"name": "g1"}, headers=auth)
    create(client, auth, host_doc(1))
    before = snapshot()
    assert_error(client.post("/api/v1/hosts", json=host_doc(2, **change), headers=auth), 400, field)
    assert_error(client.put("/api/v1/hosts/SN0001", json=host_doc(1, **change), headers=auth), 400, field)
    assert_error(client.patch("/api/v1/hosts/SN0001", json=change, headers=auth), 400, field)
    assert snapshot() == before


@pytest.mark.parametrize("body, content_type", [
    (b"", "application/json"),
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b"\xff\xfe", "application/json"),
    (b'"text"', "application/json"),
])
def test_unreadable_body_is_400(client, auth, snapshot, body, content_type):
    create(client, auth, host_doc(1))
    before = snapshot()
    for method, path in (("POST", "/api/v1/hosts"), ("PUT", "/api/v1/hosts/SN0001"),
                         ("PATCH", "/api/v1/hosts/SN0001")):
        response = client.open(path, method=method, data=body, headers={**auth, "Content-Type": content_type})
        assert_error(response, 400)
    assert snapshot() == before


def test_json_error_shape_is_the_same_for_store_errors(services):
    spec, _ = parse_host(host_doc(1, groups=["missing"]), PROFILES)
    with services.db.write() as session, pytest.raises(ValidationError) as info:
        store.create_host(session, spec, UNSET, services.vault)
    assert info.value.to_json() == {"error": "invalid", "message": "groups: unknown group 'missing'",
                                    "field": "groups"}
