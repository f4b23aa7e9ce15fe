"""``provisiond serve`` / ``demo``: what the command line changes."""

from __future__ import annotations

import requests

from tests.conftest import DEMO_HOSTS, LiveServer, free_port, install_token


def test_a_port_on_the_command_line_reaches_every_url_handed_out(settings, services, admin_token):
    """``serve --port N`` without public_url: the boot script and the
    kickstart send the installer to port N, not to the default 8080."""
    services.vault  # noqa: B018  (the key exists before the workers start)
    port = free_port()
    server = LiveServer(settings, arguments=("--port", str(port)))
    try:
        auth = {"Authorization": f"Bearer {admin_token}"}
        imported = requests.post(f"{server.url}/api/v1/import/hosts?filename=hosts.yaml", data=DEMO_HOSTS.read_bytes(),
                                 headers={**auth, "Content-Type": "application/yaml"}, timeout=10)
        assert imported.ok, imported.text
        assert requests.post(f"{server.url}/api/v1/hosts/712DM2Y/install", json={}, headers=auth, timeout=10).ok
        script = requests.get(f"{server.url}/boot/ipxe/00:26:b9:35:e9:aa", timeout=10).text
        token = install_token(services, "712DM2Y")
        assert f"http://127.0.0.1:{port}/install/{token}/ks" in script
        kickstart = requests.get(f"{server.url}/install/{token}/ks", timeout=10).text
        assert f"http://127.0.0.1:{port}/install/{token}/done" in kickstart
        assert ":8080" not in script + kickstart
    finally:
        server.stop()
