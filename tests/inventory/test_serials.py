"""Serial numbers: one alphabet on every write path, and the same serial in
any case is one host, for uniqueness and for every lookup alike."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from provisiond.db import Database, alembic_config
from tests.inventory.conftest import CSV, YAML, assert_error, minimal_doc, snapshot  # noqa: F401


@pytest.mark.parametrize("serial", ["CZ/2024/001", "SN?1", "SN#1", "a/.."])
def test_a_serial_outside_the_alphabet_is_refused_on_every_write_path(client, auth, demo_data, snapshot, serial):
    before = snapshot()
    assert_error(client.post("/api/v1/hosts", json=minimal_doc(1, serial=serial), headers=auth), 400, "serial",
                 contains="not a serial number")
    csv = f"serial,hostname,macs,profile\n{serial},h1,52:54:00:aa:00:01,default\n"
    body = assert_error(client.post("/api/v1/import/hosts?filename=h.csv", data=csv, headers={**auth, **CSV}), 400,
                        "serial")
    assert body["location"] == "h.csv:2"
    yaml = f'- {{serial: "{serial}", hostname: h1, macs: ["52:54:00:aa:00:01"], profile: default}}\n'
    assert_error(client.post("/api/v1/import/hosts?filename=h.yaml", data=yaml, headers={**auth, **YAML}), 400,
                 "serial")
    assert snapshot() == before


def test_serials_that_differ_only_in_case_are_one_host(client, auth, demo_data, snapshot):
    before = snapshot()
    clash = client.post("/api/v1/hosts", json=minimal_doc(1, serial="712dm2y"), headers=auth)
    assert_error(clash, 409, "serial", contains="serial numbers are the same in any case")
    both = ("serial,hostname,macs,profile\nSN-CASE,h1,52:54:00:aa:00:01,default\n"
            "sn-case,h2,52:54:00:aa:00:02,default\n")
    body = assert_error(client.post("/api/v1/import/hosts?filename=h.csv", data=both, headers={**auth, **CSV}), 409,
                        "serial", contains="same in any case")
    assert body["location"] == "h.csv:3"
    assert snapshot() == before

    shown = client.get("/api/v1/hosts/712dm2y", headers=auth)
    assert shown.status_code == 200 and shown.get_json()["serial"] == "712DM2Y"
    edited = client.patch("/api/v1/hosts/712Dm2y", json={"owner": "dba"}, headers=auth)
    assert edited.status_code == 200, edited.get_json()
    assert edited.get_json()["serial"] == "712DM2Y"
    assert client.post("/api/v1/hosts/712dm2y/install", json={}, headers=auth).status_code == 201
    assert client.post("/api/v1/hosts/712dm2y/cancel", headers=auth).status_code == 200
    armed = client.post("/api/v1/installs", json={"serials": ["712dm2y", "sn-web-0001"]}, headers=auth)
    assert armed.status_code == 201, armed.get_json()
    assert [one["serial"] for one in armed.get_json()["installs"]] == ["712DM2Y", "SN-WEB-0001"]

    # An import matches the existing host whatever the case it is written in.
    again = "serial,hostname,macs,profile\n712dm2y,db01.example.com,00:26:b9:35:e9:aa,mysql_server\n"
    answer = client.post("/api/v1/import/hosts?filename=h.csv", data=again, headers={**auth, **CSV})
    assert answer.get_json() == {"created": 0, "updated": 1, "groups": 0}
    assert len(client.get("/api/v1/hosts?q=712dm2y", headers=auth).get_json()["hosts"]) == 1


def _at_0004(db_url: str) -> Database:
    """The database as it was before serial keys: schema 0004, no hosts."""
    config = alembic_config(db_url)
    database = Database(db_url)
    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM events"))
        connection.execute(text("DELETE FROM hosts"))
    command.downgrade(config, "0004")
    return database


def _host(database: Database, serial: str, n: int) -> None:
    with database.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO hosts (serial, hostname, profile, protected, state, dns, variables, created_at, updated_at) "
            "VALUES (:serial, :hostname, 'default', false, 'idle', '[]', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"serial": serial, "hostname": f"h{n}"})


@pytest.mark.parametrize(("serials", "named"), [
    (["712DM2Y", "712dm2y", "OK1"], "712DM2Y and 712dm2y"),
    (["CZ/2024/001", "OK1"], "'CZ/2024/001'"),
])
def test_the_migration_refuses_to_run_over_clashes_naming_them(db_url, serials, named):
    database = _at_0004(db_url)
    try:
        for n, serial in enumerate(serials):
            _host(database, serial, n)
        with pytest.raises(RuntimeError) as refused:
            command.upgrade(alembic_config(db_url), "head")
        assert named in str(refused.value) and "Nothing was changed" in str(refused.value)
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
            assert sorted(connection.execute(text("SELECT serial FROM hosts")).scalars()) == sorted(serials)
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM hosts"))
        command.upgrade(alembic_config(db_url), "head")
        database.dispose()


def test_the_migration_keys_existing_serials(db_url):
    database = _at_0004(db_url)
    try:
        _host(database, "712DM2Y", 1)
        command.upgrade(alembic_config(db_url), "head")
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT serial_key FROM hosts")).scalar() == "712dm2y"
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("DELETE FROM hosts"))
        command.upgrade(alembic_config(db_url), "head")
        database.dispose()
