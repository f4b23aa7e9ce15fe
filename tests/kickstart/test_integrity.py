"""Kickstart integrity: no value, whatever path it takes in, can add a line,
a section or an option to a kickstart; a variable of the wrong type is
refused when it is written, naming the variable, the expected type and a
host it would break. Assertions are on the kickstart as pykickstart (the
parser Anaconda uses) reads it, not on its text."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion
from sqlalchemy import update

from provisiond import models
from tests.inventory.conftest import CSV, YAML, assert_error, snapshot  # noqa: F401

SN = "712DM2Y"  # mysql_server, in groups site-hz1 and rack-a1 (which set ntp_server and the BMC network)

CORPUS = [
    "10.0.0.1\n%pre\necho INJECTED\n%end",
    "10.0.0.1\r%pre",
    "10.0.0.1\u2028%pre",
    "%end",
    "%pre --interpreter=/bin/sh",
    "10.0.0.1 --source-address=6.6.6.6",
    "--nts",
    "$(reboot)",
    "`reboot`",
    "10.0.0.1; reboot",
    '10.0.0.1" && reboot #',
]


def structure(text: str) -> dict[str, Any]:
    """The kickstart as Anaconda's parser sees it: its sections and scripts,
    the commands it uses and their options, its packages."""
    handler = makeVersion("RHEL9")
    KickstartParser(handler).readKickstartFromString(text)
    return {
        "scripts": [(script.type, script.interp, script.errorOnFail, script.logfile) for script in handler.scripts],
        "commands": {name: str(command).strip() for name, command in handler.commands.items() if str(command).strip()},
        "packages": (sorted(handler.packages.packageList), sorted(g.name for g in handler.packages.groupList),
                     sorted(handler.packages.excludedList)),
    }


def kickstart(client, auth, serial: str = SN, query: str = "") -> Any:
    return client.get(f"/api/v1/hosts/{serial}/kickstart{query}", headers=auth)


def _host_patch(client, auth, value):
    return client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"ntp_server": value}}, headers=auth)


def _group_patch(client, auth, value):
    return client.patch("/api/v1/groups/rack-a1", json={"variables": {"ntp_server": value}}, headers=auth)


def _package_item(client, auth, value):
    return client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"packages_extra": ["nginx", value]}},
                        headers=auth)


def _bmc_netmask(client, auth, value):  # rendered into a %pre shell script
    return client.patch("/api/v1/groups/site-hz1", json={"variables": {"bmc_netmask": value}}, headers=auth)


def _yaml_block(client, auth, value):
    document = {"hosts": [{"serial": SN, "hostname": "db01.example.com", "macs": ["00:26:b9:35:e9:aa"],
                           "profile": "mysql_server", "groups": ["site-hz1", "rack-a1"],
                           "variables": {"ntp_server": value}}]}
    text = yaml.safe_dump(document, default_style=None)
    if "\n" in value:  # a YAML block scalar, as an operator would write a multi-line value
        indented = "\n".join("        " + line for line in value.split("\n"))
        text = text.replace(yaml.safe_dump(value).strip(), "|-\n" + indented) if False else (
            f"hosts:\n- serial: {SN}\n  hostname: db01.example.com\n  macs: ['00:26:b9:35:e9:aa']\n"
            f"  profile: mysql_server\n  groups: [site-hz1, rack-a1]\n  variables:\n    ntp_server: |-\n"
            + "\n".join("      " + line for line in value.split("\n")) + "\n")
    return client.post("/api/v1/import/hosts?filename=h.yaml", data=text.encode(), headers={**auth, **YAML})


def _csv_json_cell(client, auth, value):
    cell = json.dumps({"ntp_server": value}).replace('"', '""')
    text = f'serial,hostname,macs,profile,groups,variables\n{SN},db01.example.com,00:26:b9:35:e9:aa,mysql_server,' \
           f'site-hz1;rack-a1,"{cell}"\n'
    return client.post("/api/v1/import/hosts?filename=h.csv", data=text.encode(), headers={**auth, **CSV})


def _one_off(client, auth, value):
    from urllib.parse import quote

    return kickstart(client, auth, query=f"?var={quote('ntp_server=' + value)}")


PATHS = {"host variable": _host_patch, "group variable": _group_patch, "packages_extra item": _package_item,
         "group variable in a %pre script": _bmc_netmask, "YAML import (block scalar)": _yaml_block,
         "CSV JSON cell": _csv_json_cell, "one-off --var": _one_off}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("value", CORPUS)
def test_no_value_on_any_path_changes_the_kickstarts_structure(client, auth, demo_data, snapshot, path, value):
    baseline = structure(kickstart(client, auth).get_data(as_text=True))
    before = snapshot()
    answer = PATHS[path](client, auth, value)
    if answer.status_code == 200 and path != "one-off --var":
        after = kickstart(client, auth)
        assert after.status_code == 200, after.get_json()
        assert structure(after.get_data(as_text=True)) == baseline, (path, value)
        return
    if answer.status_code == 200:  # the preview itself
        assert structure(answer.get_data(as_text=True)) == baseline, (path, value)
        return
    body = assert_error(answer, 400)
    assert "ntp_server" in body["field"] or "packages_extra" in body["field"] or "bmc_netmask" in body["field"], body
    assert snapshot() == before
    assert structure(kickstart(client, auth).get_data(as_text=True)) == baseline


def test_a_free_variable_no_fragment_uses_cannot_change_the_kickstart(client, auth, demo_data):
    baseline = structure(kickstart(client, auth).get_data(as_text=True))
    answer = client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"motd": "%pre --x $(reboot); `id`"}},
                          headers=auth)
    assert answer.status_code == 200, answer.get_json()
    assert structure(kickstart(client, auth).get_data(as_text=True)) == baseline


@pytest.mark.parametrize(("target", "patch", "field", "expected"), [
    ("groups/rack-a1", {"variables": {"packages_extra": "nginx"}}, "variables.packages_extra",
     "expected a list of"),
    (f"hosts/{SN}", {"variables": {"partitions": 5}}, "variables.partitions", "expected a list of"),
    (f"hosts/{SN}", {"variables": {"repos": "x"}}, "variables.repos", "expected a list of"),
    (f"hosts/{SN}", {"variables": {"root_password_hash": "changeme"}}, "variables.root_password_hash",
     "expected a crypt(3) password hash"),
    (f"hosts/{SN}", {"variables": {"partitions": [{"mount": "/", "fstype": "xfs"}]}}, "variables.partitions[0]",
     "the field 'size' is missing"),
    (f"hosts/{SN}", {"variables": {"selinux": "off"}}, "variables.selinux", "expected one of enforcing"),
    ("groups/site-hz1", {"variables": {"bmc_netmask": "255.0.255.0"}}, "variables.bmc_netmask",
     "expected a dotted netmask"),
])
def test_a_variable_of_the_wrong_type_is_refused_naming_it_the_type_and_a_host(client, auth, demo_data, snapshot,
                                                                              target, patch, field, expected):
    """It used to be accepted, then broke every render, the installer's
    /ks included (500 template_error at boot time)."""
    before = snapshot()
    body = assert_error(client.patch(f"/api/v1/{target}", json=patch, headers=auth), 400, field, contains=expected)
    assert f"host {SN}" in body["message"] and "profile mysql_server" in body["message"]
    assert snapshot() == before
    assert kickstart(client, auth).status_code == 200


def test_an_import_that_would_break_a_host_is_refused_with_its_line(client, auth, demo_data, snapshot):
    before = snapshot()
    text = ("groups:\n- {name: rack-a1, priority: 10, variables: {packages_extra: nginx}}\n"
            "hosts:\n- {serial: SN-I1, hostname: i1, macs: ['52:54:00:aa:00:01'], profile: default}\n")
    body = assert_error(client.post("/api/v1/import/hosts?filename=h.yaml", data=text, headers={**auth, **YAML}),
                        400, "variables.packages_extra")
    assert f"host {SN}" in body["message"]  # a member of the imported group, not in the file
    bad_host = ("serial,hostname,macs,profile,variables\n"
                'SN-I1,i1,52:54:00:aa:00:01,default,"{""partitions"": 5}"\n')
    body = assert_error(client.post("/api/v1/import/hosts?filename=h.csv", data=bad_host, headers={**auth, **CSV}),
                        400, "variables.partitions")
    assert body["location"] == "h.csv:2"
    assert snapshot() == before


def test_a_write_is_not_refused_for_a_problem_it_did_not_make(client, auth, demo_data, services):
    """Data written before the checks existed (planted here) does not block
    an unrelated edit of the same host or its group; the profile check
    finds it."""
    with services.db.write() as session:
        session.execute(update(models.Host).where(models.Host.serial == SN)
                        .values(variables={"partitions": 5}))
    assert kickstart(client, auth).status_code == 500
    assert client.patch(f"/api/v1/hosts/{SN}", json={"owner": "dba"}, headers=auth).status_code == 200
    assert client.patch("/api/v1/groups/rack-a1", json={"description": "A1"}, headers=auth).status_code == 200
    check = client.get("/api/v1/checks/profiles", headers=auth).get_json()
    assert check["ok"] is False and check["hosts"] == 3
    assert [(f["serial"], f["profile"]) for f in check["failures"]] == [(SN, "mysql_server")]
    assert client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"partitions": None}},
                        headers=auth).status_code == 200
    assert client.get("/api/v1/checks/profiles", headers=auth).get_json() == {
        "hosts": 3, "failures": [], "profiles": [], "ok": True}


def test_a_one_off_variable_of_the_wrong_type_is_400(client, auth, demo_data):
    assert_error(kickstart(client, auth, query="?var=selinux=off"), 400, "var.selinux", contains="expected one of")
