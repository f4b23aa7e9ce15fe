"""Groups: named sets of hosts with variables and a priority."""

from __future__ import annotations

import pytest

from provisiond.errors import ValidationError
from provisiond.inventory import groups as group_store
from provisiond.inventory import hosts as host_store

from .conftest import assert_error, create, host_doc, import_file


def new_group(client, auth, **body):
    response = client.post("/api/v1/groups", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_create_show_list(client, auth):
    body = new_group(client, auth, name="rack-b2", description="Rack B2", priority=7, variables={"ntp": "10.2.0.1"})
    assert body == {"name": "rack-b2", "description": "Rack B2", "priority": 7, "variables": {"ntp": "10.2.0.1"},
                    "install_cap": None, "hosts": 0}
    assert client.get("/api/v1/groups/rack-b2", headers=auth).get_json() == body
    assert new_group(client, auth, name="bare") == {"name": "bare", "description": "", "priority": 0,
                                                    "variables": {}, "install_cap": None, "hosts": 0}


def test_list_is_ordered_by_priority_then_name_with_host_counts(client, auth):
    for name, priority in (("c", 5), ("a", 5), ("b", -1), ("d", 100)):
        new_group(client, auth, name=name, priority=priority)
    create(client, auth, host_doc(1, groups=["a", "d"]))
    create(client, auth, host_doc(2, groups=["a"]))
    groups = client.get("/api/v1/groups", headers=auth).get_json()["groups"]
    assert [(g["name"], g["hosts"]) for g in groups] == [("b", 0), ("a", 2), ("c", 0), ("d", 1)]


def test_duplicate_name_is_409(client, auth, snapshot):
    new_group(client, auth, name="web")
    before = snapshot()
    assert_error(client.post("/api/v1/groups", json={"name": "web", "priority": 3}, headers=auth), 409, "name")
    assert snapshot() == before


BAD = [
    ({"name": "bad name"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "ok", "priority": "high"}, "priority"),
    ({"name": "ok", "priority": 1001}, "priority"),
    ({"name": "ok", "priority": 1.5}, "priority"),
    ({"name": "ok", "variables": ["a"]}, "variables"),
    ({"name": "ok", "variables": {"not-an-identifier": 1}}, "variables.not-an-identifier"),
    ({"name": "ok", "variables": {"x": 1e400}}, "variables.x"),
    ({"name": "ok", "description": "two\nlines"}, "description"),
    ({"name": "ok", "install_slots": 3}, "install_slots"),
]


@pytest.mark.parametrize("body, field", BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_group_is_400_and_changes_nothing(client, auth, snapshot, body, field):
    new_group(client, auth, name="ok", priority=1, variables={"keep": True})
    before = snapshot()
    assert_error(client.post("/api/v1/groups", json={**body, "name": body["name"] if body["name"] != "ok" else "new"},
                             headers=auth), 400, field)
    if field != "name":
        assert_error(client.patch("/api/v1/groups/ok", json={k: v for k, v in body.items() if k != "name"},
                                  headers=auth), 400, field)
    assert snapshot() == before


def test_edit(client, auth, snapshot):
    new_group(client, auth, name="web", description="old", priority=1, variables={"a": 1})
    body = client.patch("/api/v1/groups/web", json={"priority": 20, "variables": {"b": 2}}, headers=auth).get_json()
    assert body == {"name": "web", "description": "old", "priority": 20, "variables": {"a": 1, "b": 2},
                    "install_cap": None, "hosts": 0}  # JSON Merge Patch: the variables merge
    before = snapshot()
    assert_error(client.patch("/api/v1/groups/web", json={"name": "www"}, headers=auth), 400, "name",
                 contains="renamed")
    assert snapshot() == before


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_unknown_group_is_404(client, auth, method):
    body = assert_error(client.open("/api/v1/groups/nope", method=method, json={"priority": 1}, headers=auth), 404)
    assert body["error"] == "not_found" and "nope" in body["message"]


def test_delete(client, auth, snapshot):
    new_group(client, auth, name="web")
    new_group(client, auth, name="db")
    create(client, auth, host_doc(1, groups=["web"]))
    create(client, auth, host_doc(2, groups=["web", "db"]))
    before = snapshot()
    body = assert_error(client.delete("/api/v1/groups/web", headers=auth), 409, "hosts")
    assert "2 host(s)" in body["message"]
    assert snapshot() == before

    client.patch("/api/v1/hosts/SN0001", json={"groups": []}, headers=auth)
    client.patch("/api/v1/hosts/SN0002", json={"groups": ["db"]}, headers=auth)
    assert client.delete("/api/v1/groups/web", headers=auth).status_code == 204
    assert_error(client.get("/api/v1/groups/web", headers=auth), 404)
    assert client.get("/api/v1/hosts/SN0002", headers=auth).get_json()["groups"] == ["db"]


def test_group_vars_are_in_priority_order(client, auth, services):
    new_group(client, auth, name="site", priority=0, variables={"ntp": "site", "dns": "site"})
    new_group(client, auth, name="rack", priority=10, variables={"ntp": "rack"})
    new_group(client, auth, name="aaa", priority=10, variables={"ntp": "aaa"})  # same priority: by name
    new_group(client, auth, name="low", priority=-5, variables={"ntp": "low", "extra": 1})
    create(client, auth, host_doc(1, groups=["rack", "site", "low", "aaa"], variables={}))
    with services.db.read() as session:
        record = host_store.load_record(session, "SN0001")
    assert [(g.name, g.priority) for g in record.group_vars] == [("low", -5), ("site", 0), ("aaa", 10), ("rack", 10)]
    assert record.groups == ("low", "site", "aaa", "rack")
    assert dict(record.group_vars[0].variables) == {"ntp": "low", "extra": 1}
    merged = client.get("/api/v1/hosts/SN0001/variables", headers=auth).get_json()["variables"]
    assert (merged["ntp"], merged["dns"], merged["extra"]) == ("rack", "site", 1)  # the highest priority wins

    client.patch("/api/v1/groups/low", json={"priority": 50}, headers=auth)
    with services.db.read() as session:
        record = host_store.load_record(session, "SN0001")
    assert [g.name for g in record.group_vars] == ["site", "aaa", "rack", "low"]
    merged = client.get("/api/v1/hosts/SN0001/variables", headers=auth).get_json()["variables"]
    assert merged["ntp"] == "low"


def test_host_variables_beat_group_variables(client, auth):
    new_group(client, auth, name="site", priority=1000, variables={"ntp": "group"})
    create(client, auth, host_doc(1, groups=["site"], variables={"ntp": "host"}))
    assert client.get("/api/v1/hosts/SN0001/variables", headers=auth).get_json()["variables"]["ntp"] == "host"


def test_import_upserts_groups(client, auth, demo_data):
    text = "groups:\n  - {name: rack-a1, priority: 99, variables: {ntp_server: 10.9.9.9}}\n  - {name: fresh}\nhosts: []\n"
    assert import_file(client, auth, text, "groups.yaml").get_json() == {"created": 0, "updated": 0, "groups": 2}
    rack = client.get("/api/v1/groups/rack-a1", headers=auth).get_json()
    assert (rack["priority"], rack["variables"], rack["hosts"]) == (99, {"ntp_server": "10.9.9.9"}, 2)
    assert client.get("/api/v1/groups/fresh", headers=auth).status_code == 200


def test_parse_group_directly():
    spec = group_store.parse_group({"name": "g", "priority": "5", "hosts": 3})  # hosts: output only
    assert spec == group_store.GroupSpec("g", "", 5, {})
    for bad in (None, [], "g"):
        with pytest.raises(ValidationError) as info:
            group_store.parse_group(bad)  # type: ignore[arg-type]
        assert info.value.field == "group"


def test_store_functions_directly(services):
    with services.db.write() as session:
        group_store.create_group(session, group_store.parse_group({"name": "g", "priority": 2}))
        group_store.upsert_group(session, group_store.parse_group({"name": "g", "priority": 3}))
        group_store.upsert_group(session, group_store.parse_group({"name": "h"}))
    with services.db.read() as session:
        assert [(g.name, g.priority, n) for g, n in group_store.list_groups(session)] == [("h", 0, 0), ("g", 3, 0)]
