"""The boot endpoints are hard to abuse: they can have a listener of their
own on the provisioning network, apart from the admin API; anonymous calls
add at most a timeline line a minute; and the first hardware report binds an
install's token to the machine that sent it."""

from __future__ import annotations

import requests
from sqlalchemy import func, select

from provisiond import models
from tests.conftest import LiveServer, free_port, install_token, matching_report

MAC = "00:26:b9:35:e9:aa"


def test_a_boot_listener_of_its_own_serves_the_boot_side_only(settings, services, demo_data, admin_token):
    """Admin API on 127.0.0.1, boot endpoints on 127.0.0.2 (another address
    of this machine, as a provisioning network's would be)."""
    services.vault  # noqa: B018
    boot_port = free_port()
    boot = f"http://127.0.0.2:{boot_port}"
    server = LiveServer(settings, PROVISIOND_BOOT_LISTEN=f"127.0.0.2:{boot_port}", PROVISIOND_PUBLIC_URL="")
    auth = {"Authorization": f"Bearer {admin_token}"}
    try:
        assert requests.post(f"{server.url}/api/v1/hosts/712DM2Y/install", json={}, headers=auth,
                             timeout=10).status_code == 201
        token = install_token(services, "712DM2Y")
        # The provisioning network: the boot script with the token, the installer's calls; no admin API.
        script = requests.get(f"{boot}/boot/ipxe/{MAC}", timeout=10)
        assert script.status_code == 200 and f"{boot}/install/{token}/ks" in script.text  # public_url follows
        assert requests.get(f"{boot}/install/{token}/ks", timeout=10).status_code == 200
        assert requests.get(f"{boot}/api/v1/hosts", headers=auth, timeout=10).status_code == 404
        assert requests.get(f"{boot}/api/v1/openapi.json", timeout=10).status_code == 404
        # The admin network: the API; never an armed host's boot script, nor the installer's calls.
        assert requests.get(f"{server.url}/api/v1/hosts", headers=auth, timeout=10).status_code == 200
        hidden = requests.get(f"{server.url}/boot/ipxe/{MAC}", timeout=10)
        assert hidden.status_code == 404 and token not in hidden.text
        assert requests.get(f"{server.url}/install/{token}/ks", timeout=10).status_code == 404
        for url in (server.url, boot):
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


def test_anonymous_boot_script_calls_add_at_most_one_line(client, auth, demo_data, arm, services):
    arm("712DM2Y")
    for _ in range(100):
        assert client.get(f"/boot/ipxe/{MAC}").status_code == 200
    with services.db.read() as session:
        lines = session.scalar(select(func.count()).select_from(models.Event).where(models.Event.kind == "ipxe"))
    assert lines == 1


def test_the_first_report_binds_the_token_to_the_machine_that_sent_it(client, auth, demo_data, arm, services):
    token = arm("712DM2Y")
    machine = {"REMOTE_ADDR": "10.0.0.10"}
    elsewhere = {"REMOTE_ADDR": "10.9.9.9"}
    assert client.get(f"/install/{token}/ks", environ_base=machine).status_code == 200
    assert client.post(f"/install/{token}/pre-report", json=matching_report(),
                       environ_base=machine).status_code == 200
    for method, path in (("get", "ks"), ("post", "slot"), ("post", "progress"), ("post", "done"),
                         ("post", "failed"), ("post", "pre-report")):
        answer = getattr(client, method)(f"/install/{token}/{path}", json={"message": "x"}, environ_base=elsewhere)
        assert answer.status_code == 404, (path, answer.get_json())
        assert answer.get_json() == {"error": "not_found", "message": "not found"}
    assert client.get("/api/v1/hosts/712DM2Y", headers=auth).get_json()["state"] == "verifying"
    assert client.post(f"/install/{token}/slot", environ_base=machine).status_code == 200
    assert client.post(f"/install/{token}/done", environ_base=machine).status_code == 200
    assert client.get("/api/v1/hosts/712DM2Y", headers=auth).get_json()["state"] == "installed"
