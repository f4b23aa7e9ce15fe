"""Default deny: every route needs an admin token unless it is on the explicit
allow-list or authenticates its caller itself. The URL map is walked so that
a new route cannot slip in without one of the two."""

import re

import pytest

from provisiond.web.auth import PUBLIC_ENDPOINTS
from tests.inventory.conftest import snapshot  # noqa: F401  (a fixture)

# Every endpoint that does not need an admin token, and why. Adding a route
# here is a decision someone has to make in review.
ALLOWED_WITHOUT_ADMIN_TOKEN = {
    "meta.health": "liveness probe; says nothing about hosts",
    "meta.ready": "readiness probe; says only whether the database answers",
    "meta.openapi": "the API description is public",
    "boot.file": "installers fetch kernels and initrds without an admin token",
    "ipxe.script": "iPXE firmware fetches its boot script without a credential",
    "static": "Flask's static files (none are shipped)",
    "agent.download": "an install's %post fetches the agent program before it holds any credential",
    "agent.download_sha256": "the agent program's checksum, public as the program is",
    "agent.ca_certificate": "the CA agents pin: a public certificate",
    "agent.unit": "the agent's systemd unit, fetched by %post with the program",
    "root": "/ only redirects to the console, which asks for a login",
}


def _example_url(rule) -> str:
    url = re.sub(r"<int:([^>]+)>", "1", rule.rule)
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: f"x-{m.group(1)}", url)


def _routes(app):
    """Every route but the console's: people log in to those with a session
    cookie, and tests/console/test_access.py walks them the same way."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console."):
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_public_endpoints_are_exactly_the_allow_list(app):
    assert PUBLIC_ENDPOINTS <= set(ALLOWED_WITHOUT_ADMIN_TOKEN)


def test_every_other_route_denies_without_a_token(app, client):
    checked = 0
    for rule, method in _routes(app):
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in ALLOWED_WITHOUT_ADMIN_TOKEN:
            continue
        if getattr(view, "_provisiond_self_auth", False):
            continue  # checked by its own tests (install tokens)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
            response = client.open(_example_url(rule), method=method, headers=headers)
            assert response.status_code == 401, (rule.rule, method, headers, response.status_code)
            assert response.get_json()["error"] == "unauthorized"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 15


def test_self_authenticating_views_are_only_installer_and_agent_views(app):
    """Installer views check the install token; agent views the agent's
    credential (tests/agents)."""
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], "_provisiond_self_auth", False):
            assert rule.endpoint.startswith(("installer.", "agent.")), rule.endpoint


def test_valid_token_is_accepted(client, auth):
    assert client.get("/api/v1/hosts", headers=auth).status_code == 200


def test_revoked_token_is_refused(client, services, admin_token):
    from provisiond.actions import tokens
    from provisiond.actions.principal import SYSTEM

    headers = {"Authorization": f"Bearer {admin_token}"}
    assert client.get("/api/v1/profiles", headers=headers).status_code == 200
    tokens.revoke(services, SYSTEM, "tests")
    assert client.get("/api/v1/profiles", headers=headers).status_code == 401


def test_tokens_are_stored_hashed(services, admin_token):
    from sqlalchemy import select

    from provisiond import models

    with services.db.read() as session:
        stored = session.scalars(select(models.ApiToken.token_hash)).all()
    assert admin_token not in stored
    assert len(stored) == 1 and len(stored[0]) == 64


def test_duplicate_token_name_is_a_conflict(services, admin_token):
    from provisiond.errors import Conflict
    from provisiond.web.auth import create_token

    with pytest.raises(Conflict), services.db.write() as session:
        create_token(session, "tests")


def test_unknown_route_is_json_404(client):
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


# --------------------------------------------------------------------------- roles

import datetime as dt  # noqa: E402

from provisiond.actions.principal import Role  # noqa: E402
from provisiond.web.auth import required_role  # noqa: E402
from provisiond.web.auth import create_token as _create_token  # noqa: E402


@pytest.fixture
def tokens(services):
    """A bearer header per role."""
    with services.db.write() as session:
        return {role: {"Authorization": f"Bearer {_create_token(session, f'as-{role.value}', role)}"}
                for role in Role}


def _guarded_routes(app):
    for rule, method in _routes(app):
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in ALLOWED_WITHOUT_ADMIN_TOKEN or getattr(view, "_provisiond_self_auth", False):
            continue
        yield rule, method, view


def test_every_route_declares_the_role_it_needs(app):
    undeclared = [f"{method} {rule.rule}" for rule, method, view in _guarded_routes(app) if required_role(view) is None]
    assert undeclared == []
    for rule, method, view in _guarded_routes(app):
        if method != "GET":
            assert required_role(view) in (Role.OPERATOR, Role.ADMIN), (method, rule.rule)


def test_a_viewer_is_refused_every_write_and_an_operator_every_admin_route(app, client, tokens, demo_data,
                                                                           snapshot):
    before = snapshot()
    refused = 0
    for rule, method, view in _guarded_routes(app):
        needed = required_role(view)
        url = _example_url(rule).replace("x-serial", "712DM2Y").replace("x-name", "rack-a1")
        for role in Role:
            if role.allows(needed):
                continue
            response = client.open(url, method=method, json={}, headers=tokens[role])
            assert response.status_code == 403, (method, rule.rule, role, response.status_code)
            assert response.get_json()["error"] == "forbidden"
            assert f"needs the {needed} role" in response.get_json()["message"]
            refused += 1
    assert refused >= 20
    assert snapshot() == before  # nothing changed (but the audit trail, which records each refusal)


def test_a_viewer_reads_and_an_operator_works_on_hosts(client, tokens, demo_data):
    assert client.get("/api/v1/hosts", headers=tokens[Role.VIEWER]).status_code == 200
    assert client.get("/api/v1/audit", headers=tokens[Role.VIEWER]).status_code == 200
    assert client.patch("/api/v1/hosts/712DM2Y", json={"owner": "dba"}, headers=tokens[Role.OPERATOR]).status_code \
        == 200
    assert client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=tokens[Role.OPERATOR]).status_code == 201
    assert client.patch("/api/v1/groups/rack-a1", json={"priority": 3},
                        headers=tokens[Role.OPERATOR]).status_code == 403
    with_groups = b"groups:\n- {name: g9}\nhosts: []\n"
    refused = client.post("/api/v1/import/hosts?filename=g.yaml", data=with_groups,
                          headers={**tokens[Role.OPERATOR], "Content-Type": "application/yaml"})
    assert refused.status_code == 403 and "defines groups" in refused.get_json()["message"]


def test_an_expired_token_is_refused(client, services, demo_data):
    from provisiond import models
    from provisiond.actions.tokens import create_unaudited

    with services.db.write() as session:
        token = create_unaudited(session, "short", Role.VIEWER, models.utcnow() - dt.timedelta(seconds=1))
    answer = client.get("/api/v1/hosts", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401 and "expired" in answer.get_json()["message"]


def test_tokens_through_the_api_with_a_role_and_an_expiry(client, auth, tokens):
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "operator", "expires": "30d"}, headers=auth)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["role"] == "operator" and body["expires_at"] and body["token"].startswith("pvd_")
    listed = {t["name"]: t for t in client.get("/api/v1/tokens", headers=auth).get_json()["tokens"]}
    assert listed["ci"]["state"] == "active" and "token" not in listed["ci"]
    as_ci = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/api/v1/hosts", headers=as_ci).status_code == 200
    assert client.get("/api/v1/tokens", headers=as_ci).status_code == 403
    assert client.delete("/api/v1/tokens/ci", headers=auth).status_code == 204
    assert client.get("/api/v1/hosts", headers=as_ci).status_code == 401
    assert client.get("/api/v1/tokens", headers=auth).get_json()["tokens"][0]["state"] in ("revoked", "active")
    for bad, field in (({"name": "x", "role": "root"}, "role"), ({"name": "x", "expires": "soon"}, "expires"),
                       ({"name": "bad name"}, "name"), ({"name": "ci"}, "name")):
        answer = client.post("/api/v1/tokens", json=bad, headers=auth)
        assert answer.status_code in (400, 409) and answer.get_json()["field"] == field, (bad, answer.get_json())


def test_the_audit_trail_says_who_did_what_to_which_host_and_how_it_ended(client, tokens, demo_data):
    operator, viewer = tokens[Role.OPERATOR], tokens[Role.VIEWER]
    client.patch("/api/v1/hosts/712DM2Y", json={"owner": "dba"}, headers=operator)
    client.patch("/api/v1/hosts/712DM2Y", json={"hardware": {"cpus": 0}}, headers=operator)
    client.patch("/api/v1/hosts/712DM2Y", json={"owner": "x"}, headers=viewer)  # refused before any action
    entries = client.get("/api/v1/audit?host=712dm2y", headers=viewer).get_json()["entries"]
    assert [(e["principal"], e["action"], e["outcome"], e["status"]) for e in entries[:2]] == [
        ("token as-operator", "hosts.edit", "refused", 400), ("token as-operator", "hosts.edit", "ok", 200)]
    assert entries[0]["targets"] == ["712DM2Y"] and "hardware.cpus" in entries[0]["message"]
    by_action = client.get("/api/v1/audit?action=hosts.import", headers=viewer).get_json()["entries"]
    assert by_action and by_action[0]["principal"] == "token tests"  # the demo data's import
    assert client.get("/api/v1/audit?principal=token%20nobody", headers=viewer).get_json()["entries"] == []
    assert client.get("/api/v1/audit?since=yesterday", headers=viewer).status_code == 400
    assert client.get("/api/v1/audit?host=712DM2_", headers=viewer).get_json()["entries"] == []  # not a wildcard
    assert client.get("/api/v1/audit?host=%25", headers=viewer).get_json()["entries"] == []
    first = entries[-1]["time"]
    since = client.get("/api/v1/audit", query_string={"host": "712DM2Y", "since": first}, headers=viewer)
    assert since.get_json()["entries"] == entries
    until = client.get("/api/v1/audit", query_string={"host": "712DM2Y", "until": first}, headers=viewer)
    assert until.get_json()["entries"] == []
