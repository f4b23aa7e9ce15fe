"""Routes about the service itself: health and the OpenAPI document (public)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from provisiond.web.openapi import document

bp = Blueprint("meta", __name__)


@bp.get("/healthz")
def health():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})


@bp.get("/api/v1/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(document())
