"""Default deny for the console, as tests/web/test_auth.py proves it for the
API: every console route declares its role; without a session a page sends
you to the login form and a write is refused; a viewer is refused every
write; a write without its CSRF token is refused before its view runs."""

from __future__ import annotations

import re

from provisiond.actions.principal import Role
from provisiond.web.auth import required_role
from provisiond.web.console.session import PUBLIC
from tests.console.conftest import page_csrf
from tests.inventory.conftest import snapshot  # noqa: F401  (a fixture)


def _console_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint not in PUBLIC:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def _url(rule) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", "712DM2Y", rule.rule)


def test_every_console_route_declares_its_role(app):
    routes = list(_console_routes(app))
    assert len(routes) >= 8
    for rule, method in routes:
        needed = required_role(app.view_functions[rule.endpoint])
        assert needed is not None, rule.rule
        if method != "GET" and rule.endpoint != "console.logout":
            assert needed in (Role.OPERATOR, Role.ADMIN), (method, rule.rule)


def test_without_a_session_pages_redirect_and_writes_are_refused(app, client, demo_data):
    for rule, method in _console_routes(app):
        response = client.open(_url(rule), method=method)
        if method == "GET":
            assert response.status_code == 303 and "/console/login?next=" in response.headers["Location"], rule.rule
        else:
            assert response.status_code == 401, (method, rule.rule)
            assert response.mimetype == "text/html" and "log in again" in response.get_data(as_text=True)
            assert "WWW-Authenticate" not in response.headers


def test_a_viewer_is_refused_every_write_and_changes_nothing(app, browse, snapshot):
    viewer = browse(Role.VIEWER)
    token = page_csrf(viewer)
    before = snapshot()
    refused = 0
    for rule, method in _console_routes(app):
        needed = required_role(app.view_functions[rule.endpoint])
        if Role.VIEWER.allows(needed):
            continue
        response = viewer.open(_url(rule), method=method, data={"csrf_token": token, "confirm": "db01.example.com"})
        assert response.status_code == 403, (method, rule.rule, response.status_code)
        assert response.mimetype == "text/html"
        assert "vera is a viewer; this needs the operator role" in response.get_data(as_text=True)
        refused += 1
    assert refused >= 3
    assert snapshot() == before


def test_a_write_without_its_csrf_token_is_refused_and_changes_nothing(browse, snapshot, services):
    operator = browse(Role.OPERATOR)
    before = snapshot()
    for data in ({}, {"csrf_token": "forged"}):
        response = operator.post("/console/hosts/SN-WEB-0001/reinstall", data=data)
        assert response.status_code == 403 and response.mimetype == "text/html"
        assert "security token" in response.get_data(as_text=True)
    response = operator.post("/console/hosts/SN-WEB-0001/reinstall",
                             headers={"X-CSRF-Token": "forged", "HX-Request": "true"})
    assert response.status_code == 403
    assert snapshot() == before


def test_the_api_keeps_json_errors_and_the_console_has_html_ones(client, browse):
    assert client.get("/api/v1/nothing").get_json()["error"] == "not_found"
    assert client.get("/api/v1/hosts").get_json()["error"] == "unauthorized"
    admin = browse(Role.ADMIN)
    for url, status in (("/console/nothing", 404), ("/console/hosts/NO-SUCH-HOST", 404)):
        response = admin.get(url)
        assert response.status_code == status and response.mimetype == "text/html"
        assert "<h1>" in response.get_data(as_text=True)
    assert "no host with serial number &#39;NO-SUCH-HOST&#39;" in admin.get("/console/hosts/NO-SUCH-HOST").get_data(
        as_text=True)
    # A bearer token does not open the console, a session does not open the API.
    assert admin.get("/api/v1/hosts").status_code == 401


def test_console_pages_cannot_be_framed_or_cached(browse, client):
    for response in (client.get("/console/login"), browse(Role.VIEWER).get("/console/hosts")):
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
