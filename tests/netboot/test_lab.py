"""The namespace lab itself: a client reaches the server over the bridge, and
nothing is left behind."""

import subprocess

from tests.netboot.conftest import SERVER_ADDRESS


def test_client_reaches_server_and_lab_is_removed(lab):
    client = lab.add_client("52:54:00:aa:bb:01", "10.77.0.50/24")
    result = lab.run(client, "ping", "-c", "1", "-W", "2", SERVER_ADDRESS)
    assert result.returncode == 0, result.stdout + result.stderr
    link = lab.run(client, "ip", "-o", "link", "show", "eth0").stdout
    assert "52:54:00:aa:bb:01" in link
    names = [*lab.clients, lab.server_ns]
    lab.destroy()
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in existing for name in names)
