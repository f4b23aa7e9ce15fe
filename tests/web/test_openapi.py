"""The OpenAPI document and the Flask URL map describe the same routes."""

import re

from provisiond.web.openapi import document


def _flask_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith("installer.") or not (
                rule.rule.startswith("/api/") or rule.rule.startswith("/boot/")):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def _documented(doc) -> set[tuple[str, str]]:
    return {(path, method) for path, ops in doc["paths"].items() for method in ops}


def test_document_matches_url_map(app):
    assert _documented(document()) == _flask_routes(app)


def test_document_is_served_publicly(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_public_operations_match_the_auth_allow_list(app):
    from provisiond.web.auth import PUBLIC_ENDPOINTS

    public_paths = {path for path, ops in document()["paths"].items()
                    for op in ops.values() if op.get("security") == []}
    endpoints = {re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", r.rule): r.endpoint for r in app.url_map.iter_rules()}
    assert {endpoints[p] for p in public_paths} <= PUBLIC_ENDPOINTS


def test_parameters_referenced_exist():
    doc = document()
    known = set(doc["components"]["parameters"])
    for ops in doc["paths"].values():
        for op in ops.values():
            for param in op.get("parameters", []):
                assert param["$ref"].rsplit("/", 1)[1] in known
