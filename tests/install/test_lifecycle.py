"""The install lifecycle through the real HTTP surface (Flask client):
arming, the installer endpoints, tokens, verification, done, cancel, reaper."""

import datetime as dt

import pytest
from sqlalchemy import select

from provisiond import models
from tests.conftest import matching_report

SN = "712DM2Y"


def state(client, auth, serial=SN):
    return client.get(f"/api/v1/hosts/{serial}", headers=auth).get_json()["state"]


def kinds(client, auth, serial=SN):
    return [e["kind"] for e in client.get(f"/api/v1/hosts/{serial}/events", headers=auth).get_json()["events"]]


def install_through(client, token, report=None):
    base = f"/install/{token}"
    assert client.get(f"{base}/ks").status_code == 200
    assert client.post(f"{base}/pre-report", json=report or matching_report()).status_code == 200
    assert client.post(f"{base}/slot").status_code == 200
    assert client.post(f"{base}/progress", json={"message": "installing packages"}).status_code == 200
    return client.post(f"{base}/done")


def test_happy_path_walks_the_states_and_writes_the_timeline(client, auth, demo_data, arm, services):
    token = arm(SN)
    assert state(client, auth) == "armed"
    base = f"/install/{token}"
    ks = client.get(f"{base}/ks")
    assert ks.status_code == 200
    assert f"/install/{token}/done" in ks.get_data(as_text=True)
    assert state(client, auth) == "booting"
    answer = client.post(f"{base}/pre-report", json=matching_report())
    assert answer.status_code == 200, answer.get_json()
    assert state(client, auth) == "verifying"
    assert client.post(f"{base}/slot").status_code == 200
    assert state(client, auth) == "installing"
    assert client.post(f"{base}/done").status_code == 200
    assert state(client, auth) == "installed"
    timeline = kinds(client, auth)
    for kind in ("armed", "kickstart", "hardware", "slot", "installed", "power"):
        assert kind in timeline
    with services.db.read() as session:
        operation = session.scalars(select(models.PowerOperation)).one()
    assert (operation.action, operation.argument, operation.persistent, operation.status) == \
        ("bootdev", "disk", True, "queued")


def test_done_is_idempotent_and_the_token_then_dies(client, auth, demo_data, arm, services):
    token = arm(SN)
    assert install_through(client, token).status_code == 200
    again = client.post(f"/install/{token}/done")
    assert again.status_code == 200
    assert "already" in again.get_json()["message"]
    assert kinds(client, auth).count("installed") == 1
    for method, path in (("get", "ks"), ("post", "slot"), ("post", "pre-report"), ("post", "failed")):
        response = getattr(client, method)(f"/install/{token}/{path}", json={})
        assert response.status_code == 404
        assert response.get_json() == {"error": "not_found", "message": "not found"}


@pytest.mark.parametrize("token", ["", "x", "A" * 32, "../../api/v1/hosts"])
def test_wrong_tokens_get_a_bare_404(client, demo_data, arm, token):
    arm(SN)
    for method, path in (("get", "ks"), ("post", "pre-report"), ("post", "slot"), ("post", "done")):
        response = getattr(client, method)(f"/install/{token}/{path}", json=matching_report())
        assert response.status_code in (404, 405)
        assert "712DM2Y" not in response.get_data(as_text=True)


def test_admin_token_is_not_an_install_token(client, auth, demo_data, arm, admin_token):
    arm(SN)
    assert client.get(f"/install/{admin_token}/ks").status_code == 404
    assert client.get("/install/PREVIEW/ks").status_code == 404


def test_expired_token_is_404(client, auth, demo_data, arm, services):
    token = arm(SN)
    with services.db.write() as session:
        install = session.scalars(select(models.Install)).one()
        install.expires_at = models.utcnow() - dt.timedelta(seconds=1)
    assert client.get(f"/install/{token}/ks").status_code == 404


def test_other_hosts_token_cannot_install_this_host(client, auth, demo_data, arm):
    """A token is bound to one host: using web01's token with db01's report fails web01, not db01."""
    arm(SN)
    other = arm("SN-WEB-0001")
    client.get(f"/install/{other}/ks")
    answer = client.post(f"/install/{other}/pre-report", json=matching_report(SN))
    assert answer.status_code == 409
    assert state(client, auth, "SN-WEB-0001") == "failed"
    assert state(client, auth, SN) == "armed"


def test_secret_in_host_variables_never_leaks_for_a_wrong_token(client, auth, demo_data, arm, caplog):
    client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"db_password": "PLANTED-SECRET-42"}}, headers=auth)
    arm(SN)
    response = client.get("/install/not-the-token/ks")
    assert response.status_code == 404
    assert "PLANTED-SECRET-42" not in response.get_data(as_text=True)
    assert "PLANTED-SECRET-42" not in caplog.text


def test_hardware_mismatch_halts_with_every_difference(client, auth, demo_data, arm):
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    bad = matching_report()
    bad.update(serial="712DM2X", memory_mib=16000)
    answer = client.post(f"/install/{token}/pre-report", json=bad)
    assert answer.status_code == 409
    body = answer.get_json()
    assert body["error"] == "hw_mismatch"
    assert len(body["differences"]) == 2
    host = client.get(f"/api/v1/hosts/{SN}", headers=auth).get_json()
    assert (host["state"], host["state_reason"]) == ("failed", "hw_mismatch")
    assert host["hardware"]["memory_mib"] == 65536  # nothing else changed
    assert client.post(f"/install/{token}/slot").status_code == 404  # the install is over
    text = client.post(f"/install/{token}/pre-report", json=bad, headers={"Accept": "text/plain"})
    assert text.status_code == 404


def test_mismatch_answer_is_plain_text_for_the_console(client, demo_data, arm):
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    bad = {**matching_report(), "serial": "WRONG"}
    answer = client.post(f"/install/{token}/pre-report", json=bad, headers={"Accept": "text/plain"})
    assert answer.status_code == 409
    assert answer.mimetype == "text/plain"
    assert answer.get_data(as_text=True).startswith("hardware does not match the data source: wrong serial number")


def test_report_learns_what_the_record_lacks(client, auth, demo_data, arm):
    serial = "SN-NEW-0001"
    token = arm(serial)
    client.get(f"/install/{token}/ks")
    report = {"serial": serial, "manufacturer": "QEMU", "model": "Standard PC", "cpus": 2, "memory_mib": 2000,
              "memory_source": "smbios", "boot_mac": "52:54:00:00:00:02", "disks": [{"name": "vda", "size_gb": 10}], "nics": []}
    assert client.post(f"/install/{token}/pre-report", json=report).status_code == 200
    hardware = client.get(f"/api/v1/hosts/{serial}", headers=auth).get_json()["hardware"]
    assert hardware == {"manufacturer": "QEMU", "model": "Standard PC", "cpus": 2, "memory_mib": 2000,
                        "disks": [{"name": "vda", "size_gb": 10, "model": None}]}


def test_steps_out_of_order_are_409(client, auth, demo_data, arm):
    token = arm(SN)
    assert client.post(f"/install/{token}/pre-report", json=matching_report()).status_code == 409  # before ks
    assert client.post(f"/install/{token}/slot").status_code == 409
    assert client.post(f"/install/{token}/done").status_code == 409
    assert state(client, auth) == "armed"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{nope", 400), (b"[]", 400), (b'{"serial": "x", "cpus": -1}', 400), (b"x" * 300_000, 413)],
)
def test_bad_installer_bodies(client, auth, demo_data, arm, body, status):
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    answer = client.post(f"/install/{token}/pre-report", data=body, content_type="application/json")
    assert answer.status_code == status
    assert answer.get_json()["error"]
    assert state(client, auth) == "booting"


def test_installer_failure_is_recorded(client, auth, demo_data, arm):
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    assert client.post(f"/install/{token}/failed", json={"message": "anaconda crashed"}).status_code == 200
    host = client.get(f"/api/v1/hosts/{SN}", headers=auth).get_json()
    assert (host["state"], host["state_reason"]) == ("failed", "installer_error")


def test_protected_and_in_service_hosts_need_force(client, auth, demo_data, services):
    client.patch(f"/api/v1/hosts/{SN}", json={"protected": True}, headers=auth)
    refused = client.post(f"/api/v1/hosts/{SN}/install", json={}, headers=auth)
    assert refused.status_code == 409
    assert "is protected" in refused.get_json()["message"] and "--force" in refused.get_json()["message"]
    assert state(client, auth) == "idle"
    assert client.post(f"/api/v1/hosts/{SN}/install", json={"force": True}, headers=auth).status_code == 201
    assert state(client, auth) == "armed"


def test_ready_host_is_in_service(client, auth, demo_data, services):
    with services.db.write() as session:  # the agent issue will get here through the lifecycle
        session.execute(models.Host.__table__.update().values(state="ready"))
    refused = client.post(f"/api/v1/hosts/{SN}/install", json={}, headers=auth)
    assert refused.status_code == 409
    assert "in service" in refused.get_json()["message"]


def test_arming_twice_and_cancelling(client, auth, demo_data, arm):
    token = arm(SN)
    again = client.post(f"/api/v1/hosts/{SN}/install", json={}, headers=auth)
    assert again.status_code == 409
    assert "already armed" in again.get_json()["message"]
    cancelled = client.post(f"/api/v1/hosts/{SN}/cancel", headers=auth)
    assert cancelled.status_code == 200
    assert (cancelled.get_json()["state"], cancelled.get_json()["state_reason"]) == ("failed", "cancelled")
    assert client.get(f"/install/{token}/ks").status_code == 404
    assert client.post(f"/api/v1/hosts/{SN}/cancel", headers=auth).status_code == 409
    new_token = arm(SN)  # a failed host can be armed again, with a new token
    assert new_token != token


@pytest.mark.parametrize("body", [{"force": "yes"}, {"forc": True}])
def test_bad_arm_body(client, auth, demo_data, body):
    answer = client.post(f"/api/v1/hosts/{SN}/install", json=body, headers=auth)
    assert answer.status_code == 400
    assert state(client, auth) == "idle"


def test_arming_unknown_host_is_404(client, auth):
    assert client.post("/api/v1/hosts/NOPE/install", json={}, headers=auth).status_code == 404


def test_deleting_a_host_mid_install_is_refused(client, auth, demo_data, arm):
    arm(SN)
    assert client.delete(f"/api/v1/hosts/{SN}", headers=auth).status_code == 409


def test_reaper_fails_installs_past_their_deadline_and_never_rearms(client, auth, demo_data, arm, services):
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    client.post(f"/install/{token}/pre-report", json=matching_report())
    assert client.post(f"/install/{token}/slot").status_code == 200
    later = models.utcnow() + dt.timedelta(seconds=services.settings.install_timeout_seconds + 1)
    with services.db.write() as session:
        assert services.lifecycle.reap(session, later) == [SN]
    host = client.get(f"/api/v1/hosts/{SN}", headers=auth).get_json()
    assert (host["state"], host["state_reason"]) == ("failed", "timeout")
    assert client.get("/api/v1/queue", headers=auth).get_json()["in_use"] == 0
    with services.db.write() as session:
        assert services.lifecycle.reap(session, later) == []
    assert state(client, auth) == "failed"


def test_events_since_cursor(client, auth, demo_data, arm):
    arm(SN)
    events = client.get(f"/api/v1/hosts/{SN}/events", headers=auth).get_json()["events"]
    last = events[-1]["id"]
    assert client.get(f"/api/v1/hosts/{SN}/events?since={last}", headers=auth).get_json()["events"] == []
    assert client.get(f"/api/v1/hosts/{SN}/events?since=abc", headers=auth).status_code == 400


def test_install_view_never_shows_the_token(client, auth, demo_data, arm):
    token = arm(SN)
    body = client.get(f"/api/v1/hosts/{SN}/install", headers=auth)
    assert body.status_code == 200
    assert body.get_json()["install"]["active"] is True
    assert token not in body.get_data(as_text=True)


def test_group_cap_holds_a_rack_back(client, auth, demo_data, arm, services):
    """A rack behind one uplink: its own cap of 1 while the global cap is 55."""
    assert client.patch("/api/v1/groups/rack-a1", json={"install_cap": 1}, headers=auth).get_json()["install_cap"] == 1
    first = arm(SN)
    second = arm("SN-WEB-0001")  # also in rack-a1
    install_through_slot = [
        (first, matching_report()),
        (second, {"serial": "SN-WEB-0001", "boot_mac": "52:54:00:00:00:01", "nics": [], "cpus": 4,
                  "memory_mib": 8192}),
    ]
    answers = []
    for token, report in install_through_slot:
        client.get(f"/install/{token}/ks")
        assert client.post(f"/install/{token}/pre-report", json=report).status_code == 200
        answers.append(client.post(f"/install/{token}/slot"))
    assert answers[0].status_code == 200
    assert answers[1].status_code == 429
    assert answers[1].get_json()["message"] == "install limit 1 of group rack-a1 reached: position 1 in rack-a1, retry in 1 s"
    client.post(f"/install/{first}/done")
    assert client.post(f"/install/{second}/slot").status_code == 200


@pytest.mark.parametrize("cap", [0, -1, "x"])
def test_bad_group_cap(client, auth, demo_data, cap):
    answer = client.patch("/api/v1/groups/rack-a1", json={"install_cap": cap}, headers=auth)
    assert answer.status_code == 400
    assert answer.get_json()["field"] == "install_cap"


FORGED = ["done\n2026-01-01 00:00> install done", "carriage\rreturn", "escape \x1b[2J", "separator\u2028x",
          "nul\x00 inside", "c1\x85control"]


@pytest.mark.parametrize("message", FORGED)
def test_installer_messages_are_one_line_and_forge_nothing(client, auth, demo_data, arm, message):
    """A token holder cannot write a second timeline line (or drive the
    operator's terminal) through progress or failed: 400 naming the field,
    no event written."""
    token = arm(SN)
    client.get(f"/install/{token}/ks")
    before = kinds(client, auth)
    for path in ("progress", "failed"):
        answer = client.post(f"/install/{token}/{path}", json={"message": message})
        assert answer.status_code == 400, answer.get_json()
        assert answer.get_json()["field"] == "message"
        assert "control characters" in answer.get_json()["message"]
    assert kinds(client, auth) == before
    assert state(client, auth) == "booting"


def test_every_timeline_line_is_one_line_whatever_path_wrote_it(client, auth, demo_data, arm, services):
    """Text from outside (an import's file name, a hardware report's model)
    reaches the timeline escaped; the API and provctl show one line each."""
    answer = client.post("/api/v1/import/hosts?filename=a%0A2026-01-01%2000:00%3E%20forged.yaml",
                         data=b"- {serial: SN-X1, hostname: x1, macs: ['52:54:00:aa:00:01'], profile: default}\n",
                         headers={**auth, "Content-Type": "application/yaml"})
    assert answer.status_code == 200, answer.get_json()
    events = client.get("/api/v1/hosts/SN-X1/events", headers=auth).get_json()["events"]
    assert events and all(len(e["message"].splitlines()) == 1 for e in events)
    assert "\\n2026-01-01 00:00> forged" in events[-1]["message"]
    from provisiond.cli.install import event_line

    assert len(event_line({"time": "2026-01-01T00:00:00+00:00", "message": "old\nline"}).splitlines()) == 1
