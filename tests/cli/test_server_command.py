"""``provisiond serve`` / ``demo``: what the command line changes."""

from __future__ import annotations

import shutil
import subprocess

import requests

from tests.conftest import DEMO_HOSTS, LiveServer, free_port, install_token, require


def test_a_port_on_the_command_line_reaches_every_url_handed_out(settings, services, admin_token, tmp_path):
    """``run --port N`` without public_url: the boot script, the kickstart
    and the TFTP entry (served by the netboot child, a process of its own)
    send the installer to port N, not to the default 8080."""
    require(shutil.which("tftp") is not None, "tftp-hpa's client (tftp) is not installed")
    services.vault  # noqa: B018  (the key exists before the workers start)
    port, tftp_port = free_port(), free_port()
    server = LiveServer(settings, arguments=("--port", str(port)), PROVISIOND_NETBOOT_ADDRESS="127.0.0.1",
                        PROVISIOND_TFTP_PORT=str(tftp_port))
    try:
        auth = {"Authorization": f"Bearer {admin_token}"}
        imported = requests.post(f"{server.url}/api/v1/import/hosts?filename=hosts.yaml", data=DEMO_HOSTS.read_bytes(),
                                 headers={**auth, "Content-Type": "application/yaml"}, timeout=10)
        assert imported.ok, imported.text
        assert requests.post(f"{server.url}/api/v1/hosts/712DM2Y/install", json={}, headers=auth, timeout=10).ok
        script = requests.get(f"{server.url}/boot/ipxe/00:26:b9:35:e9:aa", timeout=10).text
        token = install_token(services, "712DM2Y")
        assert f"http://127.0.0.1:{port}/install/{token}/ks" in script
        entry = tmp_path / "entry"
        fetched = subprocess.run(["tftp", "127.0.0.1", str(tftp_port), "-c", "get", "pxelinux.cfg/01-00-26-b9-35-e9-aa",
                                  str(entry)], capture_output=True, text=True, timeout=30)
        assert fetched.returncode == 0, fetched
        assert f"http://127.0.0.1:{port}/install/{token}/ks" in entry.read_text()
        kickstart = requests.get(f"{server.url}/install/{token}/ks", timeout=10).text
        assert f"http://127.0.0.1:{port}/install/{token}/done" in kickstart
        assert ":8080" not in script + kickstart + entry.read_text()
    finally:
        server.stop()
