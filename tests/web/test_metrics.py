"""``GET /metrics``: a viewer's token reads it (as a Prometheus server
scrapes), no token or a wrong one is refused; text format or OpenMetrics."""

from __future__ import annotations

from typing import Any

from tests.conftest import sample, scrape


def test_a_viewer_token_reads_metrics_and_no_token_does_not(client: Any, viewer: dict[str, str]) -> None:
    samples = scrape(client, viewer)
    assert sample(samples, "provisiond_database_up") == 1
    assert ("provisiond_dhcp_packets_total", frozenset({("outcome", "shed")})) in samples
    assert ("provisiond_tftp_requests_total", frozenset({("outcome", "refused")})) in samples
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
    openmetrics = client.get("/metrics", headers={**viewer, "Accept": "application/openmetrics-text"})
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")


def test_metrics_are_not_served_on_the_boot_listener(services: Any, viewer: dict[str, str]) -> None:
    """With a provisioning network of its own (boot_listen), /metrics is on
    the admin side only, like the rest of what needs a token."""
    import dataclasses

    from provisiond.services import Services
    from provisiond.web.app import build_app

    split = Services(dataclasses.replace(services.settings, boot_listen="10.0.0.1:8081"), services.db)
    client = build_app(services=split).test_client()
    assert client.get("/metrics", headers=viewer, base_url="http://10.0.0.1:8081").status_code == 404
    assert client.get("/metrics", headers=viewer).status_code == 200
