"""Routes about the service itself: health and the OpenAPI document (public)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from provisiond.web.openapi import document

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def ready():  # type: ignore[no-untyped-def]
    """200 when this HTTP instance can serve: the database answers and its
    schema is current; else 503 saying what is wrong."""
    from provisiond.health import readiness
    from provisiond.web import services

    ok, body = readiness(services().db, [])
    response = jsonify({**body, "role": "serve"})
    response.status_code = 200 if ok else 503
    return response


@bp.get("/api/v1/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(document())
