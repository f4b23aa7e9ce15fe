"""Default deny: every route needs an admin token unless it is on the explicit
allow-list or authenticates its caller itself. The URL map is walked so that
a new route cannot slip in without one of the two."""

import re

import pytest

from provisiond.web.auth import PUBLIC_ENDPOINTS

# Every endpoint that does not need an admin token, and why. Adding a route
# here is a decision someone has to make in review.
ALLOWED_WITHOUT_ADMIN_TOKEN = {
    "meta.health": "liveness probe; says nothing about hosts",
    "meta.openapi": "the API description is public",
    "boot.file": "installers fetch kernels and initrds without an admin token",
    "ipxe.script": "iPXE firmware fetches its boot script without a credential",
    "static": "Flask's static files (none are shipped)",
}


def _example_url(rule) -> str:
    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: f"x-{m.group(1)}", rule.rule)


def _routes(app):
    for rule in app.url_map.iter_rules():
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


def test_self_authenticating_views_are_only_installer_views(app):
    for rule in app.url_map.iter_rules():
        if getattr(app.view_functions[rule.endpoint], "_provisiond_self_auth", False):
            assert rule.endpoint.startswith("installer."), rule.endpoint


def test_valid_token_is_accepted(client, auth):
    assert client.get("/api/v1/hosts", headers=auth).status_code == 200


def test_revoked_token_is_refused(client, services, admin_token):
    from provisiond.web.auth import revoke_token

    headers = {"Authorization": f"Bearer {admin_token}"}
    assert client.get("/api/v1/profiles", headers=headers).status_code == 200
    with services.db.write() as session:
        revoke_token(session, "tests")
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
