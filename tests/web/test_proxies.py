"""Behind a reverse proxy: the installer's address comes from
X-Forwarded-For only when the direct peer is a trusted proxy, so the
timeline and the install token's address binding see the installer, and
nobody else can claim an address."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from werkzeug.test import Client

from provisiond.services import Services
from provisiond.web.app import build_app
from provisiond.web.proxies import TrustedProxies
from tests.conftest import DEMO_HOSTS, install_token, matching_report


def _seen(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()]


@pytest.mark.parametrize(("peer", "forwarded", "proto", "seen"), [
    ("10.9.0.2", "192.0.2.7", "https", "192.0.2.7 https"),                     # the proxy's word is taken
    ("10.9.0.2", "6.6.6.6, 192.0.2.7", "", "192.0.2.7 http"),                  # right-most: the proxy appended it
    ("10.9.0.2", "192.0.2.7, 10.9.0.3", "", "192.0.2.7 http"),                 # through two trusted proxies
    ("198.51.100.1", "192.0.2.7", "https", "198.51.100.1 http"),               # not a proxy: headers ignored
    ("10.9.0.2", "not-an-address", "gopher", "10.9.0.2 http"),                 # nonsense is not believed
    ("10.9.0.2", "10.9.0.3", "", "10.9.0.2 http"),                             # only proxies: the peer stays
])
def test_the_client_address_is_believed_from_trusted_proxies_only(peer, forwarded, proto, seen):
    client = Client(TrustedProxies(_seen, ["10.9.0.0/24"]))
    headers = {"X-Forwarded-For": forwarded, **({"X-Forwarded-Proto": proto} if proto else {})}
    assert client.get("/", headers=headers, environ_base={"REMOTE_ADDR": peer}).get_data(as_text=True) == seen


def test_without_trusted_proxies_the_headers_change_nothing():
    client = Client(TrustedProxies(_seen, []))
    answer = client.get("/", headers={"X-Forwarded-For": "192.0.2.7"}, environ_base={"REMOTE_ADDR": "10.9.0.2"})
    assert answer.get_data(as_text=True) == "10.9.0.2 http"


def test_the_install_token_binds_to_the_installer_behind_the_proxy(settings, services, auth):
    """The app applies ``trusted_proxies``: the token is bound to the
    installer's address the proxy reports, not to the proxy's."""
    app = build_app(services=Services.build(dataclasses.replace(settings, trusted_proxies=["127.0.0.1"])))
    client = app.test_client()
    client.post("/api/v1/import/hosts?filename=hosts.yaml", data=DEMO_HOSTS.read_bytes(),
                headers={**auth, "Content-Type": "application/yaml"})
    assert client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=auth).status_code == 201
    token = install_token(services, "712DM2Y")
    installer = {"X-Forwarded-For": "10.0.0.10"}
    assert client.get(f"/install/{token}/ks", headers=installer).status_code == 200
    assert client.post(f"/install/{token}/pre-report", json=matching_report(), headers=installer).status_code == 200
    progress = {"message": "installing packages"}
    assert client.post(f"/install/{token}/progress", json=progress, headers=installer).status_code == 200
    assert client.post(f"/install/{token}/progress", json=progress,
                       headers={"X-Forwarded-For": "10.0.0.99"}).status_code == 404  # another machine
    assert client.post(f"/install/{token}/progress", json=progress).status_code == 404  # the proxy itself
