"""``GET /metrics``: Prometheus metrics (:mod:`provisiond.metrics`), for a viewer.

A Prometheus server scrapes it with a viewer token
(``provisiond tokens create prometheus --role viewer``), sent as
``Authorization: Bearer <token>`` (``authorization.credentials_file`` or
``bearer_token_file`` in its scrape config). The answer holds the counters of
every provisiond process of this machine (they share the metrics directory)
and the state read from the database.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from provisiond.actions.principal import Role
from provisiond.metrics import DatabaseCollector, exposition
from provisiond.web import services
from provisiond.web.auth import needs

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@needs(Role.VIEWER)
def metrics():  # type: ignore[no-untyped-def]
    svc = services()
    body, content_type = exposition(request.headers.get("Accept"),
                                    DatabaseCollector(svc.db, svc.lifecycle.limits))
    return Response(body, content_type=content_type)
