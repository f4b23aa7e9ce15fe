"""PATCH is JSON Merge Patch (RFC 7396) for hosts and groups, in the API
and in provctl alike."""

from __future__ import annotations

import json

import pytest

from provisiond.inventory.patch import merge_patch
from tests.inventory.conftest import assert_error, snapshot  # noqa: F401


# RFC 7396, Appendix A: every example, target / patch / result.
@pytest.mark.parametrize(("target", "patch", "result"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_does_what_rfc_7396_says(target, patch, result):
    before = json.dumps(target)
    assert merge_patch(target, patch) == result
    assert json.dumps(target) == before  # the target is not changed


SN = "712DM2Y"


def host(client, auth, serial=SN):
    return client.get(f"/api/v1/hosts/{serial}", headers=auth).get_json()


def test_a_host_patch_merges_mappings_and_null_clears(client, auth, demo_data):
    client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"a": 1, "b": {"x": 1, "y": 2}}}, headers=auth)
    answer = client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"b": {"y": None, "z": 3}, "c": 4}},
                          headers=auth)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["variables"] == {"a": 1, "b": {"x": 1, "z": 3}, "c": 4}
    cleared = client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"a": None}, "owner": None,
                                                        "hardware": {"disks": None}}, headers=auth).get_json()
    assert "a" not in cleared["variables"] and cleared["owner"] is None
    assert cleared["hardware"]["disks"] is None and cleared["hardware"]["cpus"] == 16  # siblings kept


def test_the_macs_short_form_replaces_the_nics(client, auth, demo_data):
    """The README's short form works on an existing host (it used to clash
    with the stored nics: "give nics or macs, not both")."""
    answer = client.patch(f"/api/v1/hosts/{SN}", json={"macs": ["52:54:00:ab:cd:01", "52:54:00:ab:cd:02"]},
                          headers=auth)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["nics"] == [{"mac": "52:54:00:ab:cd:01", "name": None, "primary": True},
                                         {"mac": "52:54:00:ab:cd:02", "name": None, "primary": False}]
    netmask = client.patch(f"/api/v1/hosts/{SN}", json={"netmask": "255.255.0.0"}, headers=auth)
    assert netmask.status_code == 200, netmask.get_json()
    assert netmask.get_json()["prefix"] == 16


def test_a_null_bmc_password_clears_it_and_an_absent_one_keeps_it(client, auth, demo_data):
    assert client.patch(f"/api/v1/hosts/{SN}", json={"bmc": {"password": "s3cret"}}, headers=auth).status_code == 200
    assert host(client, auth)["bmc"]["password_set"] is True
    assert client.patch(f"/api/v1/hosts/{SN}", json={"bmc": {"user": "admin"}}, headers=auth).status_code == 200
    assert host(client, auth)["bmc"] == {**host(client, auth)["bmc"], "user": "admin", "password_set": True}
    assert client.patch(f"/api/v1/hosts/{SN}", json={"bmc": {"password": None}}, headers=auth).status_code == 200
    assert host(client, auth)["bmc"]["password_set"] is False


def test_a_refused_patch_changes_nothing(client, auth, demo_data, snapshot):
    before = snapshot()
    assert_error(client.patch(f"/api/v1/hosts/{SN}", json={"hardware": {"cpus": 0}}, headers=auth), 400,
                 "hardware.cpus")
    assert_error(client.patch(f"/api/v1/hosts/{SN}", json=["not", "a", "patch"], headers=auth), 400)
    assert snapshot() == before


def test_a_group_patch_merges_its_variables(client, auth, demo_data):
    client.patch("/api/v1/groups/rack-a1", json={"variables": {"a": 1, "b": 2}}, headers=auth)
    answer = client.patch("/api/v1/groups/rack-a1", json={"variables": {"a": None, "c": 3}}, headers=auth)
    assert answer.status_code == 200, answer.get_json()
    variables = answer.get_json()["variables"]
    assert "a" not in variables and variables["b"] == 2 and variables["c"] == 3
