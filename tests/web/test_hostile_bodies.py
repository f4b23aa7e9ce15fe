"""Bodies built to break a parser: lone UTF-16 surrogates and JSON nested
100,000 levels deep, on every route that reads a body, admin and installer.
Each is a 400 naming the field, and nothing is written."""

from __future__ import annotations

import json

import pytest

from tests.conftest import matching_report
from tests.inventory.conftest import assert_error, host_doc, snapshot  # noqa: F401  (snapshot is a fixture)

SURROGATE = "\ud800"
DEEP = 100_000


def raw(document: object) -> bytes:
    """JSON as a client may send it: ``\\ud800`` as an escape (valid JSON syntax)."""
    return json.dumps(document).encode()


def nested(levels: int = DEEP) -> str:
    return "[" * levels + "]" * levels


def deep_body(field: str, extra: dict | None = None) -> bytes:
    """``{..., "<field>": [[[...]]]}`` as text (json.dumps would recurse)."""
    prefix = json.dumps(extra or {})[:-1]
    separator = ", " if extra else ""
    return f'{prefix}{separator}"{field}": {nested()}}}'.encode()


ADMIN_TEXT_FIELDS = [
    ("owner", lambda d: d.update(owner=f"ops{SURROGATE}"), "owner"),
    ("os", lambda d: d.update(os=f"rocky{SURROGATE}"), "os"),
    ("model", lambda d: d["hardware"].update(model=f"R7{SURROGATE}"), "hardware.model"),
    ("manufacturer", lambda d: d["hardware"].update(manufacturer=SURROGATE), "hardware.manufacturer"),
    ("bmc user", lambda d: d["bmc"].update(user=f"adm{SURROGATE}"), "bmc.user"),
    ("bmc password", lambda d: d["bmc"].update(password=f"pw{SURROGATE}"), "bmc.password"),
    ("variable", lambda d: d["variables"].update(role=f"web{SURROGATE}"), "variables.role"),
    ("nested variable", lambda d: d["variables"].update(deep={"list": ["ok", SURROGATE]}), "variables.deep.list[1]"),
]


@pytest.mark.parametrize(("what", "change", "field"), ADMIN_TEXT_FIELDS, ids=[f[0] for f in ADMIN_TEXT_FIELDS])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_a_lone_surrogate_in_a_host_field_is_400_naming_it(client, auth, demo_data, snapshot, what, change, field,
                                                            method):
    document = host_doc(7)
    change(document)
    before = snapshot()
    path = "/api/v1/hosts" if method == "POST" else f"/api/v1/hosts/{document['serial']}"
    if method != "POST":
        assert client.post("/api/v1/hosts", json=host_doc(7), headers=auth).status_code == 201
        before = snapshot()
    answer = client.open(path, method=method, data=raw(document), headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, field, contains="surrogate")
    assert snapshot() == before


@pytest.mark.parametrize(("path", "method", "document", "field"), [
    ("/api/v1/groups", "POST", {"name": "g1", "description": f"rack{SURROGATE}"}, "description"),
    ("/api/v1/groups", "POST", {"name": "g1", "variables": {"x": SURROGATE}}, "variables.x"),
    ("/api/v1/groups/rack-a1", "PATCH", {"description": SURROGATE}, "description"),
    ("/api/v1/hosts/712DM2Y/install", "POST", {SURROGATE: True}, SURROGATE),
    ("/api/v1/installs", "POST", {"serials": [f"712DM2Y{SURROGATE}"]}, "serials[0]"),
    ("/api/v1/hosts/712DM2Y/power", "POST", {"action": SURROGATE}, "action"),
    ("/api/v1/hosts/712DM2Y/bootdev", "POST", {"device": SURROGATE}, "device"),
])
def test_a_lone_surrogate_anywhere_in_an_admin_body_is_400(client, auth, demo_data, snapshot, path, method, document,
                                                           field):
    before = snapshot()
    answer = client.open(path, method=method, data=raw(document), headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, field, contains="surrogate")
    assert snapshot() == before


@pytest.mark.parametrize(("path", "method", "field"), [
    ("/api/v1/hosts", "POST", "variables"),
    ("/api/v1/hosts/712DM2Y", "PATCH", "variables"),
    ("/api/v1/hosts/712DM2Y", "PUT", "variables"),
    ("/api/v1/groups", "POST", "variables"),
    ("/api/v1/groups/rack-a1", "PATCH", "variables"),
    ("/api/v1/hosts/712DM2Y/install", "POST", "force"),
    ("/api/v1/installs", "POST", "serials"),
    ("/api/v1/hosts/712DM2Y/power", "POST", "action"),
    ("/api/v1/hosts/712DM2Y/bootdev", "POST", "device"),
])
def test_json_nested_a_hundred_thousand_levels_is_400_on_admin_routes(client, auth, demo_data, snapshot, path, method,
                                                                      field):
    before = snapshot()
    answer = client.open(path, method=method, data=deep_body(field), headers={**auth, "Content-Type": "application/json"})
    assert_error(answer, 400, field, contains="nested more than")
    assert snapshot() == before


def test_moderately_deep_variables_are_refused_before_the_database(client, auth, demo_data, snapshot):
    """Deep enough to pass the JSON parser, too deep to be a template variable."""
    before = snapshot()
    document = {"variables": {"x": json.loads(nested(200))}}
    answer = client.patch("/api/v1/hosts/712DM2Y", json=document, headers=auth)
    body = assert_error(answer, 400, contains="nested more than")
    assert body["field"].startswith("variables")
    assert snapshot() == before


@pytest.fixture
def booting(client, demo_data, arm):
    token = arm("712DM2Y")
    assert client.get(f"/install/{token}/ks").status_code == 200
    return token


@pytest.mark.parametrize(("route", "document", "field"), [
    ("pre-report", {**matching_report(), "serial": f"712DM2Y{SURROGATE}"}, "serial"),
    ("pre-report", {**matching_report(), "model": SURROGATE}, "model"),
    ("pre-report", {**matching_report(), "disks": [{"name": "sda", "size_gb": 600, "model": SURROGATE}]},
     "disks[0].model"),
    ("progress", {"message": f"step {SURROGATE}"}, "message"),
    ("failed", {"message": f"boom {SURROGATE}"}, "message"),
])
def test_a_lone_surrogate_in_an_installer_body_is_400(client, auth, booting, snapshot, route, document, field):
    before = snapshot()
    answer = client.post(f"/install/{booting}/{route}", data=raw(document), headers={"Content-Type": "application/json"})
    assert_error(answer, 400, field, contains="surrogate")
    assert snapshot() == before


@pytest.mark.parametrize(("route", "field"), [
    ("pre-report", "disks"), ("progress", "message"), ("failed", "message"), ("done", "status"),
])
def test_json_nested_a_hundred_thousand_levels_is_400_on_installer_routes(client, booting, snapshot, route, field):
    before = snapshot()
    answer = client.post(f"/install/{booting}/{route}", data=deep_body(field),
                         headers={"Content-Type": "application/json"})
    assert_error(answer, 400, field, contains="nested more than")
    assert snapshot() == before


def test_a_lone_surrogate_in_an_imported_yaml_file_is_400_naming_line_and_field(client, auth, demo_data, snapshot):
    before = snapshot()
    text = ('- {serial: SN-S1, hostname: s1, macs: ["52:54:00:aa:00:01"], profile: default}\n'
            '- serial: SN-S2\n  hostname: s2\n  macs: ["52:54:00:aa:00:02"]\n  profile: default\n'
            '  variables: {motd: "hi \\ud800"}\n')
    answer = client.post("/api/v1/import/hosts?filename=h.yaml", data=text.encode(),
                         headers={**auth, "Content-Type": "application/yaml"})
    body = assert_error(answer, 400, "variables.motd", contains="surrogate")
    assert body["location"] == "h.yaml:6"
    assert snapshot() == before


def chunks(data: bytes, size: int = 500):
    """A body sent with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_body_over_the_limit_is_413_whole_never_cut(settings, services, admin_token, snapshot):
    """Through gunicorn (which terminates chunked bodies): a 41-row CSV
    import over max_body_bytes is refused with 413 and nothing is written;
    one under the limit, sent the same way, is imported whole."""
    import requests

    from tests.conftest import LiveServer

    services.vault  # noqa: B018  (the key exists before the workers start)
    limit = 4096
    server = LiveServer(settings, workers=1, PROVISIOND_MAX_BODY_BYTES=str(limit))
    auth = {"Authorization": f"Bearer {admin_token}"}
    header = "serial,hostname,macs,profile,owner\n"
    rows = [f"SN-C{i:03d},c{i}.example.com,52:54:00:cc:00:{i:02x},default,{'o' * 60}\n" for i in range(41)]
    big = (header + "".join(rows)).encode()
    assert len(big) > limit
    try:
        before = snapshot()
        for path, body in (("/api/v1/import/hosts?filename=h.csv", big),
                           ("/api/v1/hosts", json.dumps({**host_doc(1), "variables": {"x": "y" * limit}}).encode()),
                           ("/api/v1/installs", json.dumps({"serials": ["SN"] * limit}).encode())):
            answer = requests.post(server.url + path, data=chunks(body), headers={**auth, "Content-Type": "text/csv"
                                   if path.endswith("csv") else "application/json"}, timeout=10)
            assert answer.status_code == 413, (path, answer.status_code, answer.text)
            assert answer.json()["error"] == "too_large"
        assert snapshot() == before
        small = (header + "".join(rows[:20])).encode()
        assert len(small) < limit
        answer = requests.post(server.url + "/api/v1/import/hosts?filename=h.csv", data=chunks(small),
                               headers={**auth, "Content-Type": "text/csv"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["created"] == 20
    finally:
        server.stop()


def test_an_eight_mebibyte_variable_is_refused_naming_the_limit(client, auth, demo_data, snapshot):
    """Template variables have a size limit (it used to take 8 MiB)."""
    before = snapshot()
    answer = client.patch("/api/v1/hosts/712DM2Y", json={"variables": {"blob": "x" * (8 << 20)}}, headers=auth)
    assert_error(answer, 400, "variables.blob", contains="at most 4096 are accepted")
    many = {f"v{i}": "y" * 4000 for i in range(20)}
    assert_error(client.post("/api/v1/groups", json={"name": "big", "variables": many}, headers=auth), 400,
                 "variables", contains="bytes as JSON; at most 65536")
    assert snapshot() == before
