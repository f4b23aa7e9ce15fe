"""Import and export as YAML and CSV: upsert by serial number in one
transaction, errors located by file:line and field, nothing written on
error, round trips that change nothing, BMC passwords that never come out."""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from provisiond import models
from provisiond.errors import ValidationError
from provisiond.inventory import hosts as host_store
from provisiond.inventory.schema import UNSET
from provisiond.inventory.transfer import CSV_COLUMNS, export_csv, parse_import

from .conftest import PROFILES, assert_error, export, host_doc, import_file, mac_for

ROWS = 50


# --------------------------------------------------------------------------- building files


def doc_to_cells(doc: dict[str, Any]) -> dict[str, str]:
    """The CSV spelling of a host document (as an operator would write it)."""
    bmc = doc.get("bmc") or {}
    hardware = doc.get("hardware") or {}
    disks = hardware.get("disks")
    cells = {
        "serial": doc["serial"],
        "hostname": doc["hostname"],
        "macs": ";".join(f"{n['name']}={n['mac']}" if n.get("name") else n["mac"] for n in doc["nics"]),
        "ip": doc.get("ip"),
        "prefix": doc.get("prefix"),
        "gateway": doc.get("gateway"),
        "dns": ";".join(doc.get("dns") or []),
        "bmc_type": bmc.get("type"),
        "bmc_address": bmc.get("address"),
        "bmc_port": bmc.get("port"),
        "bmc_user": bmc.get("user"),
        "bmc_password": bmc.get("password"),
        "manufacturer": hardware.get("manufacturer"),
        "model": hardware.get("model"),
        "cpus": hardware.get("cpus"),
        "memory_mib": hardware.get("memory_mib"),
        "disks": None if disks is None else ";".join(f"{d['name']}:{d['size_gb']}" for d in disks),
        "profile": doc["profile"],
        "os": doc.get("os"),
        "owner": doc.get("owner"),
        "groups": ";".join(doc.get("groups") or []),
        "site": doc.get("site"),
        "rack": doc.get("rack"),
        "protected": "true" if doc.get("protected") else "false",
        "variables": json.dumps(doc["variables"]) if doc.get("variables") else None,
    }
    return {k: "" if v is None else str(v) for k, v in cells.items()}


def csv_file(docs: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for doc in docs:
        writer.writerow(doc_to_cells(doc))
    return out.getvalue()


def yaml_file(docs: list[dict[str, Any]]) -> str:
    """``hosts:`` then one host per line, so host ``i`` is on line ``i + 2``."""
    lines = ["hosts:"]
    for doc in docs:
        lines.append("- " + yaml.safe_dump(doc, default_flow_style=True, width=10**9).strip())
    return "\n".join(lines) + "\n"


def write(fmt: str, docs: list[dict[str, Any]]) -> str:
    return csv_file(docs) if fmt == "csv" else yaml_file(docs)


def fleet(password: str = "pw", owner: str = "ops") -> list[dict[str, Any]]:
    docs = []
    for n in range(ROWS):
        doc = host_doc(100 + n, owner=owner, groups=["rack-a1"] if n % 2 else ["site-hz1", "rack-a1"])
        doc["bmc"]["password"] = f"{password}-{n}"
        docs.append(doc)
    return docs


def state(client, auth, snapshot) -> tuple[Any, str, str]:
    """Everything a refused import must leave alone."""
    return snapshot(), export(client, auth, "csv"), export(client, auth, "yaml")


# --------------------------------------------------------------------------- a bad row anywhere


# name: (break row ``i`` of ``docs``, the field named, status, the row the error is on)
Fault = Callable[[list[dict[str, Any]], int], int]


def _set(path: str, value: Any, **also: Any) -> Fault:
    def fault(docs: list[dict[str, Any]], i: int) -> int:
        target: Any = docs[i]
        keys = path.split("/")
        for key in keys[:-1]:
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = value
        docs[i].update(also)
        return i
    return fault


def _copy_from_neighbour(path: str) -> Fault:
    """Row ``i`` (row 1 when ``i`` is 0) takes the value of the row before
    it: the later of two rows that claim one value is at fault."""
    def fault(docs: list[dict[str, Any]], i: int) -> int:
        later = max(i, 1)
        source: Any = docs[later - 1]
        target: Any = docs[later]
        keys = path.split("/")
        for key in keys[:-1]:
            source = source[int(key)] if key.isdigit() else source[key]
            target = target[int(key)] if key.isdigit() else target[key]
        target[keys[-1]] = source[keys[-1]]
        return later
    return fault


FAULTS: dict[str, tuple[Fault, str, int]] = {
    "bad-mac": (_set("nics/1/mac", "52:54:00:zz:00:01"), "nics[1].mac", 400),
    "multicast-mac": (_set("nics/0/mac", "01:00:5e:00:00:01"), "nics[0].mac", 400),
    "bad-hostname": (_set("hostname", "bad_host.example.com"), "hostname", 400),
    "bad-ip": (_set("ip", "10.20.0.999"), "ip", 400),
    "gateway-outside": (_set("gateway", "10.99.0.1"), "gateway", 400),
    "unknown-profile": (_set("profile", "no_such_profile"), "profile", 400),
    "bad-cpus": (_set("hardware/cpus", "many"), "hardware.cpus", 400),
    "bad-bmc-port": (_set("bmc/port", 99999), "bmc.port", 400),
    "unknown-group": (_set("groups", ["rack-a1", "no-such-group"]), "groups", 400),
    "mac-twice-in-file": (_copy_from_neighbour("nics/0/mac"), "nics", 409),
    "hostname-twice-in-file": (_copy_from_neighbour("hostname"), "hostname", 409),
    "ip-twice-in-file": (_copy_from_neighbour("ip"), "ip", 409),
    "serial-twice-in-file": (_copy_from_neighbour("serial"), "serial", 409),
    "mac-of-a-db-host": (_set("nics/1/mac", "00:26:B9:35:E9:AB"), "nics", 409),  # 712DM2Y's eth1
    "ip-of-a-db-host": (_set("ip", "10.0.0.21", gateway=None), "ip", 409),  # SN-WEB-0001
    "hostname-of-a-db-host": (_set("hostname", "new01.example.com"), "hostname", 409),  # SN-NEW-0001
}


@pytest.fixture
def loaded(client, auth, demo_data) -> None:
    """The demo hosts and a first import of the 50-host fleet."""
    response = import_file(client, auth, csv_file(fleet()), "fleet.csv")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"created": ROWS, "updated": 0, "groups": 0}


def check_refused(client, auth, fmt: str, fault_name: str, index: int) -> None:
    fault, field, status = FAULTS[fault_name]
    docs = fleet(password="new", owner="changed")  # every row would change something
    docs.insert(ROWS // 2, host_doc(999))  # and one row would be a new host
    bad_row = fault(docs, index)
    filename = f"fleet.{fmt}"
    body = assert_error(import_file(client, auth, write(fmt, docs), filename), status, field)
    assert body["location"] == f"{filename}:{bad_row + 2}", body
    assert body["message"].startswith(f"{filename}:{bad_row + 2}: {field}: "), body
    assert "new-" not in body["message"]  # no password in the message


# Every fault at its own row (spread over the file), and some at the edges.
PLACED = [(name, (7 * k + 3) % (ROWS + 1)) for k, name in enumerate(sorted(FAULTS))]
PLACED += [(name, index) for name in ("bad-mac", "mac-twice-in-file", "mac-of-a-db-host", "serial-twice-in-file")
           for index in (0, ROWS)]


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
@pytest.mark.parametrize("fault_name, index", PLACED, ids=[f"{n}@{i}" for n, i in PLACED])
def test_a_bad_row_writes_nothing(client, auth, snapshot, loaded, fmt, index, fault_name):
    before = state(client, auth, snapshot)
    check_refused(client, auth, fmt, fault_name, index)
    assert state(client, auth, snapshot) == before


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_a_bad_row_anywhere_writes_nothing(client, auth, snapshot, loaded, fmt):
    before = state(client, auth, snapshot)

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(index=st.integers(0, ROWS), fault_name=st.sampled_from(sorted(FAULTS)))
    def refused(index: int, fault_name: str) -> None:
        check_refused(client, auth, fmt, fault_name, index)

    refused()
    assert state(client, auth, snapshot) == before


def test_the_same_file_without_the_fault_is_accepted(client, auth, loaded, services):
    docs = fleet(password="new", owner="changed")
    docs.insert(ROWS // 2, host_doc(999))
    response = import_file(client, auth, yaml_file(docs), "fleet.yaml")
    assert response.get_json() == {"created": 1, "updated": ROWS, "groups": 0}
    hosts = client.get("/api/v1/hosts?q=host1", headers=auth).get_json()["hosts"]
    assert {h["owner"] for h in hosts} == {"changed"}
    with services.db.read() as session:
        secret = session.scalar(select(models.Host.bmc_secret).where(models.Host.serial == "SN0107"))
    assert services.vault.decrypt(secret) == "new-7"


# --------------------------------------------------------------------------- CSV specifics


def test_csv_unknown_column(client, auth, snapshot, demo_data):
    text = csv_file([host_doc(1)]).replace("variables", "colour", 1)
    before = snapshot()
    body = assert_error(import_file(client, auth, text, "hosts.csv"), 400, "colour")
    assert body["location"] == "hosts.csv:1"
    assert snapshot() == before


def test_csv_column_named_twice(client, auth):
    text = "serial,hostname,macs,profile,hostname\nSN1,a.example.com,52:54:00:00:00:01,default,b.example.com\n"
    body = assert_error(import_file(client, auth, text, "hosts.csv"), 400, "hostname")
    assert body["location"] == "hosts.csv:1" and "twice" in body["message"]


def test_csv_needs_a_serial_column(client, auth):
    body = assert_error(import_file(client, auth, "hostname,macs,profile\nweb.example.com,52:54:00:00:00:01,default\n",
                                    "hosts.csv"), 400, "serial")
    assert body["location"] == "hosts.csv:1"


def test_csv_empty_file(client, auth):
    body = assert_error(import_file(client, auth, "", "hosts.csv"), 400, "header")
    assert body["location"] == "hosts.csv:1"


def test_csv_extra_cells(client, auth, snapshot, demo_data):
    lines = csv_file([host_doc(1), host_doc(2), host_doc(3)]).splitlines()
    lines[2] += ",surplus,cells"
    before = snapshot()
    body = assert_error(import_file(client, auth, "\n".join(lines) + "\n", "hosts.csv"), 400, "row")
    assert body["location"] == "hosts.csv:3"
    assert f"{len(CSV_COLUMNS) + 2} cells for {len(CSV_COLUMNS)} columns" in body["message"]
    assert snapshot() == before


@pytest.mark.parametrize("cell, problem", [
    ('{"role": web}', "not a JSON object"),
    ("{'role': 'web'}", "not a JSON object"),
    ('{"role": "web"', "not a JSON object"),
    ("[1, 2]", "expected a mapping"),
    ('{"bad-key": 1}', "identifiers"),
    ("[" * 100000, "not a JSON object"),
])
def test_csv_bad_variables(client, auth, snapshot, demo_data, cell, problem):
    docs = [host_doc(1), host_doc(2)]
    text = csv_file(docs)
    cells = doc_to_cells(docs[1])
    cells["variables"] = cell
    out = io.StringIO()
    csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n").writerow(cells)
    before = snapshot()
    body = assert_error(import_file(client, auth, text + out.getvalue(), "hosts.csv"), 400)
    assert body["field"].startswith("variables") and problem in body["message"]
    assert body["location"] == "hosts.csv:4"
    assert snapshot() == before


def test_csv_quoted_cells_spanning_lines_keep_line_numbers(client, auth):
    header = ",".join(["serial", "hostname", "macs", "profile", "variables"])
    text = "\n".join([
        header,
        'SN1,a.example.com,52:54:00:00:00:01,default,"{""a"":',
        ' 1,',
        ' ""b"": 2}"',
        "",
        "SN2,b.example.com,52:54:00:00:00:02,nope,",
    ]) + "\n"
    body = assert_error(import_file(client, auth, text, "hosts.csv"), 400, "profile")
    assert body["location"] == "hosts.csv:6"
    bad_first = text.replace("52:54:00:00:00:01", "zz")
    body = assert_error(import_file(client, auth, bad_first, "hosts.csv"), 400, "nics[0].mac")
    assert body["location"] == "hosts.csv:2"  # the line the row starts on, not where it ends


def test_csv_short_forms(client, auth):
    text = ("serial,hostname,macs,profile,ip,prefix,dns,disks,groups,protected\n"
            "SN1,a.example.com,AABB.CCDD.EEF0;aa-bb-cc-dd-ee-f2,default,10.1.0.5,255.255.0.0,10.1.0.2;10.1.0.3,"
            "sda:480;:2000,,yes\n")
    assert import_file(client, auth, text, "hosts.csv").status_code == 200
    host = client.get("/api/v1/hosts/SN1", headers=auth).get_json()
    assert host["nics"] == [{"mac": "aa:bb:cc:dd:ee:f0", "name": None, "primary": True},
                            {"mac": "aa:bb:cc:dd:ee:f2", "name": None, "primary": False}]
    assert host["prefix"] == 16 and host["dns"] == ["10.1.0.2", "10.1.0.3"] and host["protected"] is True
    assert host["hardware"]["disks"] == [{"name": "sda", "size_gb": 480, "model": None},
                                         {"name": None, "size_gb": 2000, "model": None}]


def test_csv_disk_models_survive_a_round_trip(client, auth, services):
    disks = [{"name": "sda", "size_gb": 480, "model": "INTEL SSDSC2KB48"}, {"name": "sdb", "size_gb": None,
                                                                             "model": "ST4000; NM0035"}]
    client.post("/api/v1/hosts", json=host_doc(1, hardware={"disks": disks}), headers=auth)
    client.post("/api/v1/hosts", json=host_doc(2, hardware={"disks": []}), headers=auth)
    with services.db.read() as session:
        before = host_store.list_records(session)
    text = export(client, auth, "csv")
    assert import_file(client, auth, text, "hosts.csv").status_code == 200
    with services.db.read() as session:
        assert host_store.list_records(session) == before


def test_csv_bom_and_crlf(client, auth):
    text = csv_file([host_doc(1)]).replace("\n", "\r\n")
    response = import_file(client, auth, b"\xef\xbb\xbf" + text.encode(), "hosts.csv")
    assert response.status_code == 200, response.get_json()


# --------------------------------------------------------------------------- YAML specifics


BLOCK_YAML = """\
groups:
  - name: web
    priority: 5
hosts:
  - serial: SN1
    hostname: web1.example.com
    nics:
      - mac: 52:54:00:00:00:01
        name: eth0
      - mac: {mac}
        name: eth1
    profile: default
    hardware:
      disks:
        - {{name: sda, size_gb: 480}}
        - {{name: sdb, size_gb: {size}}}
    groups: [web]
"""


@pytest.mark.parametrize("mac, size, field, line", [
    ("52:54:00:00:00:zz", 100, "nics[1].mac", 10),
    ("52:54:00:00:00:02", "huge", "hardware.disks[1].size_gb", 16),
    ("52:54:00:00:00:01", 100, "nics", 7),  # listed twice
])
def test_yaml_error_names_the_line_of_the_field(client, auth, snapshot, mac, size, field, line):
    before = snapshot()
    body = assert_error(import_file(client, auth, BLOCK_YAML.format(mac=mac, size=size), "hosts.yaml"), 400, field)
    assert body["location"] == f"hosts.yaml:{line}"
    assert snapshot() == before  # the group was not created either


def test_yaml_groups_and_hosts_in_one_file(client, auth):
    response = import_file(client, auth, BLOCK_YAML.format(mac="52:54:00:00:00:02", size=100), "hosts.yaml")
    assert response.get_json() == {"created": 1, "updated": 0, "groups": 1}
    assert client.get("/api/v1/hosts/SN1", headers=auth).get_json()["groups"] == ["web"]
    assert client.get("/api/v1/groups/web", headers=auth).get_json()["priority"] == 5


@pytest.mark.parametrize("text, field, line", [
    ("hosts:\n  - serial: SN1\n    hostname: [unclosed\n", "file", 4),
    ("hosts:\n  - serial: SN1\n\tbad: tab\n", "file", 3),
    ("hostz: []\n", "hostz", 1),
    ("hosts: {serial: SN1}\n", "hosts", 1),
    ("groups:\n  - name: bad name\n", "name", 2),
    ("groups:\n  - {name: g, priority: high}\n", "priority", 2),
    ("- serial: SN1\n  hostname: a.example.com\n  macs: [52:54:00:00:00:01]\n  profile: default\n"
     "  variables: {when: 2024-01-01}\n", "variables.when", 5),
    ("- serial: SN1\n  hostname: a.example.com\n  macs: [52:54:00:00:00:01]\n  profile: default\n"
     "  hardware: {cpus: .inf}\n", "hardware.cpus", 5),
    ("- serial: SN1\n  hostname: a.example.com\n  macs: [52:54:00:00:00:01]\n  profile: default\n"
     "  groups: [g, g]\n", "groups", 5),
    ("- !!python/object/apply:os.system ['true']\n", "file", 1),
    ("- just a string\n", "host", 1),
])
def test_yaml_bad_files(client, auth, snapshot, text, field, line):
    before = snapshot()
    body = assert_error(import_file(client, auth, text, "hosts.yaml"), 400, field)
    assert body["location"] == f"hosts.yaml:{line}", body
    assert snapshot() == before


def test_yaml_duplicate_mac_within_the_file_and_against_the_db(client, auth, snapshot, demo_data):
    text = yaml_file([host_doc(1), host_doc(2, nics=[{"mac": mac_for(1, 1).replace(":", "-").upper()}])])
    before = snapshot()
    body = assert_error(import_file(client, auth, text, "hosts.yaml"), 409, "nics")
    assert body["location"] == "hosts.yaml:3" and "SN0001" in body["message"], body
    text = yaml_file([host_doc(1), host_doc(2, nics=[{"mac": "0026.b935.e9aa"}])])
    body = assert_error(import_file(client, auth, text, "hosts.yaml"), 409, "nics")
    assert body["location"] == "hosts.yaml:3" and "712DM2Y" in body["message"]
    assert snapshot() == before


def test_yaml_unquoted_macs_and_serials_stay_as_written(client, auth):
    # YAML 1.1 reads 52:54:00:00:00:01 as a base-60 integer and 00123 as octal 83.
    text = ("- serial: 00123\n  hostname: a.example.com\n  macs: [52:54:00:00:00:01, 5254.0000.0002]\n"
            "  profile: default\n  hardware: {cpus: 16, memory_mib: 0x10}\n")
    body = assert_error(import_file(client, auth, text, "hosts.yaml"), 400, "hardware.memory_mib")
    assert body["location"] == "hosts.yaml:5"
    response = import_file(client, auth, text.replace("0x10", "1024"), "hosts.yaml")
    assert response.status_code == 200, response.get_json()
    host = client.get("/api/v1/hosts/00123", headers=auth).get_json()
    assert [n["mac"] for n in host["nics"]] == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert host["hardware"]["cpus"] == 16
    exported = export(client, auth, "yaml")
    assert "serial: '00123'" in exported
    assert import_file(client, auth, exported, "again.yaml").get_json()["updated"] == 1


@pytest.mark.parametrize("text", ["[" * 20000, "- " * 5000 + "x",
                                  "- {variables: {a: " + "[" * 3000 + "]" * 3000 + "}}"])
def test_yaml_nested_too_deeply_is_400(client, auth, snapshot, text):
    before = snapshot()
    body = assert_error(import_file(client, auth, text, "deep.yaml"), 400, "file", contains="nested too deeply")
    assert body["location"] == "deep.yaml"
    assert snapshot() == before


def test_empty_yaml_imports_nothing(client, auth):
    for text in ("", "# nothing\n", "[]\n", "hosts: []\n"):
        assert import_file(client, auth, text, "hosts.yaml").get_json() == {"created": 0, "updated": 0, "groups": 0}


def test_json_import(client, auth):
    response = import_file(client, auth, json.dumps([host_doc(1)]), "hosts.json")
    assert response.get_json()["created"] == 1


# --------------------------------------------------------------------------- the request itself


def test_import_request_errors(client, auth, snapshot):
    before = snapshot()
    assert_error(import_file(client, auth, "x", "hosts.yaml", fmt="xml"), 400, "format")
    assert_error(import_file(client, auth, b"\xff\xfe\x00", "hosts.csv"), 400, contains="hosts.csv")
    assert_error(client.get("/api/v1/export/hosts?format=xml", headers=auth), 400, "format")
    assert snapshot() == before


def test_format_from_content_type_and_file_name(client, auth):
    text = csv_file([host_doc(1)])
    response = client.post("/api/v1/import/hosts?filename=upload", data=text,
                           headers={**auth, "Content-Type": "text/csv"})
    assert response.status_code == 200, response.get_json()
    assert import_file(client, auth, text, "again.CSV").get_json()["updated"] == 1


# --------------------------------------------------------------------------- upsert


def test_upsert_by_serial_and_events(client, auth, services):
    assert import_file(client, auth, csv_file([host_doc(1), host_doc(2)]), "a.csv").get_json() == \
        {"created": 2, "updated": 0, "groups": 0}
    assert import_file(client, auth, csv_file([host_doc(2, owner="dba"), host_doc(3)]), "b.csv").get_json() == \
        {"created": 1, "updated": 1, "groups": 0}
    assert client.get("/api/v1/hosts/SN0002", headers=auth).get_json()["owner"] == "dba"
    assert client.get("/api/v1/hosts/SN0001", headers=auth).get_json()["owner"] == "ops"  # untouched
    with services.db.read() as session:
        rows = session.execute(select(models.Host.serial, models.Event.message).join(models.Host)
                               .order_by(models.Event.id)).all()
    assert rows == [("SN0001", "host SN0001 added by import of a.csv"),
                    ("SN0002", "host SN0002 added by import of a.csv"),
                    ("SN0002", "host SN0002 updated by import of b.csv"),
                    ("SN0003", "host SN0003 added by import of b.csv")]


def test_hosts_swap_hostnames_ips_and_macs_in_one_import(client, auth, services):
    import_file(client, auth, yaml_file([host_doc(1), host_doc(2)]), "a.yaml")
    one, two = host_doc(1), host_doc(2)
    for key in ("hostname", "ip", "nics"):
        one[key], two[key] = two[key], one[key]
    response = import_file(client, auth, yaml_file([one, two]), "swap.yaml")
    assert response.status_code == 200, response.get_json()
    got = client.get("/api/v1/hosts/SN0001", headers=auth).get_json()
    assert (got["hostname"], got["ip"], got["nics"][0]["mac"]) == ("host2.example.com", "10.20.0.12", mac_for(2))


def test_a_new_host_takes_what_an_updated_host_gives_up(client, auth):
    import_file(client, auth, yaml_file([host_doc(1)]), "a.yaml")
    moved = host_doc(1, hostname="renamed.example.com", ip="10.20.1.1", nics=[{"mac": mac_for(7)}])
    new = host_doc(2, hostname="host1.example.com", ip="10.20.0.11", nics=host_doc(1)["nics"])
    response = import_file(client, auth, yaml_file([new, moved]), "b.yaml")  # the new host comes first
    assert response.get_json() == {"created": 1, "updated": 1, "groups": 0}
    assert client.get("/api/v1/hosts/SN0002", headers=auth).get_json()["hostname"] == "host1.example.com"


def test_import_rows_directly(services):
    parsed = parse_import(csv_file([host_doc(1), host_doc(2)]), "x.csv", "csv", PROFILES)
    assert [row.location for row in parsed.hosts] == ["x.csv:2", "x.csv:3"]
    assert parsed.hosts[0].password is UNSET
    with services.db.write() as session:
        result = host_store.import_hosts(session, parsed.hosts, services.vault, "x.csv")
    assert (result.created, result.updated) == (2, 0)
    with pytest.raises(ValidationError) as info:
        parse_import("serial\nSN1\n", "y.csv", "csv", PROFILES)
    assert info.value.location == "y.csv:2" and info.value.field == "profile"


# --------------------------------------------------------------------------- round trips


@pytest.fixture
def varied(client, auth, demo_data) -> None:
    """Hosts that use every field, and some that use almost none."""
    client.post("/api/v1/groups", json={"name": "edge", "priority": -3, "variables": {"x": [1, {"y": None}]},
                                        "description": 'quotes " and, commas'}, headers=auth)
    docs = fleet()[:10]
    docs[0]["variables"] = {"unicode": "中文 ✓", "nested": {"list": [1, 2.5, None, True]}, "empty": ""}
    docs[1]["owner"] = 'needs "quoting", really'
    docs[2]["hardware"] = {"disks": [{"name": "nvme0n1", "size_gb": 960, "model": "Samsung PM9A3"}]}
    docs[3]["groups"] = ["edge", "site-hz1"]
    docs[4]["bmc"] = {"type": "wol"}
    docs[5]["protected"] = True
    docs[6]["nics"] = [{"mac": mac_for(106)}]
    docs[7].update(ip=None, prefix=None, gateway=None, dns=[])
    docs[8]["serial"] = "0012"  # looks like a number; must stay text
    docs[9]["os"] = "yes"
    assert import_file(client, auth, yaml_file(docs), "varied.yaml").status_code == 200


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_export_import_export_is_identical(client, auth, services, varied, fmt):
    first = export(client, auth, fmt)
    with services.db.read() as session:
        records = host_store.list_records(session)
    response = import_file(client, auth, first, f"export.{fmt}")
    assert response.get_json()["updated"] == len(records)
    assert export(client, auth, fmt) == first
    with services.db.read() as session:
        assert host_store.list_records(session) == records  # no field was lost on the way


def test_csv_export_shape(client, auth, varied):
    rows = list(csv.DictReader(io.StringIO(export(client, auth, "csv"))))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["serial"] for r in rows] == sorted(r["serial"] for r in rows)
    by_serial = {r["serial"]: r for r in rows}
    assert by_serial["712DM2Y"]["macs"] == "eth0=00:26:b9:35:e9:aa;eth1=00:26:b9:35:e9:ab"
    assert by_serial["SN0100"]["bmc_password"] == ""
    assert by_serial["0012"]["serial"] == "0012"


def test_yaml_export_shape(client, auth, varied):
    data = yaml.safe_load(export(client, auth, "yaml"))
    assert [g["name"] for g in data["groups"]] == ["edge", "site-hz1", "rack-a1"]  # by priority
    host = next(h for h in data["hosts"] if h["serial"] == "0012")
    assert "state" not in host and "password_set" not in host["bmc"]


def test_exports_import_into_an_empty_database(client, auth, services, varied, snapshot):
    yaml_text, csv_text = export(client, auth, "yaml"), export(client, auth, "csv")
    with services.db.read() as session:
        records = host_store.list_records(session)
    for serial in [r.serial for r in records]:
        assert client.delete(f"/api/v1/hosts/{serial}?force=true", headers=auth).status_code == 204
    assert import_file(client, auth, yaml_text, "all.yaml").get_json()["created"] == len(records)
    assert import_file(client, auth, csv_text, "all.csv").get_json()["updated"] == len(records)
    with services.db.read() as session:
        again = host_store.list_records(session)
    strip = lambda r: {**r.__dict__, "has_bmc_secret": None}  # noqa: E731 - secrets do not travel
    assert [strip(r) for r in again] == [strip(r) for r in records]


# --------------------------------------------------------------------------- BMC secrets


def raw_secrets(services) -> dict[str, str | None]:
    with services.db.read() as session:
        return dict(session.execute(select(models.Host.serial, models.Host.bmc_secret)).all())


@pytest.mark.parametrize("fmt", ["csv", "yaml"])
def test_bmc_password_is_encrypted_and_never_comes_out(client, auth, services, demo_data, caplog, fmt):
    caplog.set_level(logging.DEBUG)
    docs = fleet(password="Sup3r-Secret")[:5]
    response = import_file(client, auth, write(fmt, docs), f"fleet.{fmt}")
    assert response.status_code == 200
    secrets = raw_secrets(services)
    for n, doc in enumerate(docs):
        stored = secrets[doc["serial"]]
        assert stored and "Sup3r-Secret" not in stored
        assert services.vault.decrypt(stored) == f"Sup3r-Secret-{n}"
    outputs = [
        response.get_data(as_text=True),
        export(client, auth, "csv"),
        export(client, auth, "yaml"),
        client.get("/api/v1/hosts", headers=auth).get_data(as_text=True),
        client.get("/api/v1/hosts/SN0100", headers=auth).get_data(as_text=True),
        client.get("/api/v1/hosts/SN0100/variables", headers=auth).get_data(as_text=True),
        client.get("/api/v1/hosts/SN0100/kickstart", headers=auth).get_data(as_text=True),
        caplog.text,
    ]
    with services.db.read() as session:
        outputs += [json.dumps([e.message, e.data]) for e in session.scalars(select(models.Event))]
    for text in outputs:
        assert "Sup3r-Secret" not in text
    assert client.get("/api/v1/hosts/SN0100", headers=auth).get_json()["bmc"]["password_set"] is True


def test_empty_bmc_password_keeps_the_stored_secret(client, auth, services, demo_data):
    import_file(client, auth, csv_file(fleet(password="first")[:3]), "a.csv")
    before = raw_secrets(services)
    docs = fleet(password="second")[:3]
    docs[0]["bmc"]["password"] = ""  # empty cell: keep
    docs[1]["bmc"].pop("password")  # same in CSV
    docs[0]["owner"] = "changed"
    assert import_file(client, auth, csv_file(docs), "b.csv").status_code == 200
    after = raw_secrets(services)
    assert after["SN0100"] == before["SN0100"] and after["SN0101"] == before["SN0101"]
    assert services.vault.decrypt(after["SN0102"]) == "second-2"
    assert client.get("/api/v1/hosts/SN0100", headers=auth).get_json()["owner"] == "changed"


def test_yaml_password_semantics(client, auth, services, demo_data):
    import_file(client, auth, yaml_file(fleet(password="first")[:3]), "a.yaml")
    docs = fleet(password="second")[:3]
    docs[0]["bmc"].pop("password")  # not mentioned: keep
    docs[1]["bmc"]["password"] = None  # explicitly nothing: clear
    assert import_file(client, auth, yaml_file(docs), "b.yaml").status_code == 200
    after = raw_secrets(services)
    assert services.vault.decrypt(after["SN0100"]) == "first-0"
    assert after["SN0101"] is None
    assert services.vault.decrypt(after["SN0102"]) == "second-2"


def test_export_never_writes_a_password_cell():
    assert "bmc_password" in CSV_COLUMNS
    assert export_csv([]) == ",".join(CSV_COLUMNS) + "\n"


def test_file_helpers_are_sound():
    """The builders above write what the line arithmetic assumes."""
    docs = fleet()
    assert yaml_file(docs).count("\n") == ROWS + 1
    assert csv_file(docs).count("\n") == ROWS + 1
    assert yaml.safe_load(yaml_file(docs))["hosts"] == [copy.deepcopy(d) for d in docs]
