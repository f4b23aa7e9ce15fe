"""Admin API: kickstart preview, variables, profiles, and request-body errors."""

import dataclasses
import shutil

import pytest

from provisiond.services import Services
from provisiond.web.app import build_app


@pytest.fixture
def broken_client(settings, tmp_path, auth, services):
    """A server with site directories of fragments and profiles (searched
    before the shipped ones) that the test may break."""
    fragments, profiles = tmp_path / "fragments", tmp_path / "profiles"
    fragments.mkdir()
    profiles.mkdir()
    svc = Services.build(dataclasses.replace(settings, fragments_dir=(fragments,), profiles_dir=(profiles,)))
    client = build_app(services=svc).test_client()
    client.fragments = fragments
    client.profiles = profiles
    yield client
    svc.db.dispose()


def test_preview_uses_preview_token_and_public_url(client, auth, demo_data):
    text = client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth).get_data(as_text=True)
    assert "http://provisiond.test:8080/install/PREVIEW/done" in text
    assert "nginx" in text


def test_one_off_variables_are_the_top_layer(client, auth, demo_data):
    response = client.get("/api/v1/hosts/SN-WEB-0001/kickstart?var=selinux=permissive", headers=auth)
    assert "selinux --permissive" in response.get_data(as_text=True)
    body = client.get("/api/v1/hosts/712DM2Y/variables?var=x=1", headers=auth).get_json()
    assert body["variables"]["ntp_server"] == "10.1.0.1"  # rack (priority 10) beats site (0)
    assert body["variables"]["x"] == "1"


@pytest.mark.parametrize("bad", ["noequals", "1bad=x", "=x"])
def test_bad_one_off_variable_is_400(client, auth, demo_data, bad):
    response = client.get(f"/api/v1/hosts/SN-WEB-0001/kickstart?var={bad}", headers=auth)
    assert response.status_code == 400
    assert response.get_json()["field"] == "var"


def test_unknown_host_preview_is_404(client, auth):
    response = client.get("/api/v1/hosts/NOPE/kickstart", headers=auth)
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": "no host with serial number 'NOPE'"}


def test_template_error_is_a_clear_500_never_a_partial_file(broken_client, auth, demo_data):
    (broken_client.fragments / "packages.j2").write_text("%packages\n{{ no_such_variable }}\n%end\n")
    response = broken_client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth)
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "template_error"
    assert body["fragment"] == "packages" and body["line"] == 2
    assert "no_such_variable" in body["message"]
    assert "%pre" not in response.get_data(as_text=True)


def test_missing_fragment_file_is_a_clear_500(broken_client, auth, demo_data):
    (broken_client.profiles / "web_server.yaml").write_text(
        "extends: web_server\nfragments: [header, no-such-fragment]\n")
    response = broken_client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth)
    assert response.status_code == 500
    assert response.get_json()["fragment"] == "no-such-fragment"
    assert str(broken_client.fragments) in response.get_json()["message"]


def test_a_site_fragment_shadows_the_shipped_one(broken_client, auth, demo_data):
    (broken_client.fragments / "selinux.j2").write_text("selinux --permissive  # the site's own\n")
    text = broken_client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth).get_data(as_text=True)
    assert "selinux --permissive  # the site's own" in text and "selinux --enforcing" not in text


def test_injection_through_host_data_renders_literally(broken_client, auth, demo_data):
    """A value is data, never template code: a site fragment that prints a
    free-text variable prints the braces as they are."""
    (broken_client.fragments / "selinux.j2").write_text("# motd: {{ motd }}\nselinux --enforcing\n")
    response = broken_client.patch("/api/v1/hosts/SN-WEB-0001", headers=auth,
                                   json={"owner": "{{ 7*7 }}", "variables": {"motd": "{{ 7*7 }}"}})
    assert response.status_code == 200, response.get_json()
    text = broken_client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth).get_data(as_text=True)
    assert "# motd: {{ 7*7 }}" in text
    assert "49" not in text


def test_bmc_secret_never_reaches_a_kickstart(client, auth, demo_data):
    response = client.patch("/api/v1/hosts/712DM2Y", headers=auth,
                            json={"bmc": {"type": "ipmi", "address": "192.168.0.10", "password": "S3cr3t-BMC-pw"}})
    assert response.status_code == 200
    assert "S3cr3t" not in response.get_data(as_text=True)
    for path in ("/kickstart", "/variables", ""):
        assert "S3cr3t" not in client.get(f"/api/v1/hosts/712DM2Y{path}", headers=auth).get_data(as_text=True)


def test_profiles_list_and_show(client, auth):
    names = [p["name"] for p in client.get("/api/v1/profiles", headers=auth).get_json()["profiles"]]
    assert names == ["default", "mysql_server", "web_server"]
    profile = client.get("/api/v1/profiles/web_server", headers=auth).get_json()
    assert profile["extends"] == "default"
    assert "pre-report" in profile["fragments"]
    assert client.get("/api/v1/profiles/nope", headers=auth).status_code == 404


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (b"", "application/json", "needs a JSON object"),
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (b"\xff\xfe", "application/json", "not UTF-8"),
    ],
)
def test_malformed_bodies_are_400(client, auth, body, content_type, needle):
    response = client.post("/api/v1/hosts", data=body, headers={**auth, "Content-Type": content_type})
    assert response.status_code == 400
    assert needle in response.get_json()["message"]


def test_oversized_body_is_413(settings, auth, services):
    small = Services(settings=dataclasses.replace(settings, max_body_bytes=1024), db=services.db)
    client = build_app(services=small).test_client()
    response = client.post("/api/v1/import/hosts", data=b"x" * 4096, headers={**auth, "Content-Type": "text/csv"})
    assert response.status_code == 413
    assert response.get_json()["error"]


def test_a_line_break_that_got_past_the_writes_still_never_reaches_a_kickstart(broken_client, auth, demo_data,
                                                                             services):
    """The last guard: a value planted in the database (not through a
    write, which refuses it) makes the render fail with a clear 500."""
    from sqlalchemy import update

    from provisiond import models

    (broken_client.fragments / "selinux.j2").write_text("# motd: {{ motd }}\nselinux --enforcing\n")
    with services.db.write() as session:
        session.execute(update(models.Host).where(models.Host.serial == "SN-WEB-0001")
                        .values(variables={"motd": "hi\n%pre\nreboot\n%end"}))
    response = broken_client.get("/api/v1/hosts/SN-WEB-0001/kickstart", headers=auth)
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "template_error" and body["fragment"] == "selinux"
    assert "would add a line to the kickstart" in body["message"]
