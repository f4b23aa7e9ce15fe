"""The health listener of ``worker`` and ``netboot`` (:mod:`provisiond.health`):
its metrics. Readiness is tested through the roles in tests/test_roles.py."""

from __future__ import annotations

from typing import Any

import requests

from provisiond.health import HealthListener
from tests.conftest import parse_metrics


def test_the_health_listener_serves_the_counters(services: Any) -> None:
    listener = HealthListener("127.0.0.1:0", services.db, [], "netboot")
    listener.start()
    try:
        response = requests.get("http://%s:%d/metrics" % listener.address, timeout=10)
    finally:
        listener.stop()
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/plain")
    samples = parse_metrics(response.text)
    assert ("provisiond_tftp_requests_total", frozenset({("outcome", "completed")})) in samples
    assert not any(name == "provisiond_hosts" for name, _ in samples)  # the database's state: serve only
