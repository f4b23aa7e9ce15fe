"""Enrollment: an install's ticket accepts its agent and hands the host off;
without one an agent waits for an operator (as salt-key); a rebuilt host's
new key is denied; arming a reinstall revokes the old agent."""

from __future__ import annotations

from sqlalchemy import select

from provisiond import models
from tests.agents.conftest import SN, AgentCalls, host_state, new_credential, timeline
from tests.conftest import matching_report


def test_the_install_ticket_hands_the_host_to_its_agent(client, auth, installed, services):
    config = installed()
    assert config["server_url"].startswith("https://")
    assert len(config["ca_fingerprint"]) == 64 and config["ticket"].startswith("pvt_")
    agent = AgentCalls(client, serial=SN)
    answer = agent.enroll(config["ticket"])
    assert answer.status_code == 201, answer.get_json()
    assert answer.get_json()["state"] == "accepted" and answer.get_json()["host"] == SN
    # Handed off; its profile's first hand-off job (facts) is queued for the agent.
    assert host_state(client, auth) == "handed_off"
    kinds = [e["kind"] for e in timeline(client, auth)]
    assert kinds[-3:] == ["handoff", "job", "handoff"]
    with services.db.read() as session:
        stored = session.scalars(select(models.Agent)).one()
    assert stored.credential_hash != agent.credential and agent.credential not in str(stored.__dict__)
    # Enrolling again with the same credential is harmless.
    again = agent.enroll(config["ticket"])
    assert again.status_code == 200 and again.get_json()["state"] == "accepted"


def test_a_ticket_works_once(client, auth, installed):
    config = installed()
    assert AgentCalls(client).enroll(config["ticket"]).status_code == 201
    second = AgentCalls(client).enroll(config["ticket"])
    assert second.status_code == 410 and second.get_json()["error"] == "ticket_used"


def test_a_ticket_is_no_good_before_done_or_after_its_window(client, auth, demo_data, arm, services):
    import datetime as dt

    from tests.conftest import matching_report

    token = arm(SN)
    base = f"/install/{token}"
    client.get(f"{base}/ks")
    client.post(f"{base}/pre-report", json=matching_report())
    client.post(f"{base}/slot")
    ticket = client.post(f"{base}/agent").get_json()["ticket"]
    early = AgentCalls(client).enroll(ticket)
    assert early.status_code == 409 and early.get_json()["error"] == "ticket_not_yet"
    assert client.post(f"{base}/done").status_code == 200
    with services.db.write() as session:
        install = session.scalars(select(models.Install)).one()
        install.finished_at -= dt.timedelta(seconds=services.settings.enrollment_window_seconds + 1)
    late = AgentCalls(client).enroll(ticket)
    assert late.status_code == 410 and late.get_json()["error"] == "ticket_expired"
    assert host_state(client, auth) == "installed"


def test_an_unknown_ticket_and_bad_bodies_change_nothing(client, auth, installed, services):
    installed()
    assert AgentCalls(client).enroll("pvt_" + "x" * 43).status_code == 404
    for body in ({}, {"credential": "short"}, {"credential": new_credential(), "machine_id": "x" * 65},
                 {"credential": new_credential(), "serial": "x" * 65}, {"credential": new_credential(), "hostname": "a\nb"}):
        response = client.post("/agent/v1/enroll", json=body, base_url="https://gateway.test")
        assert response.status_code == 400, (body, response.get_json())
    with services.db.read() as session:
        assert session.scalars(select(models.Agent)).all() == []
    assert host_state(client, auth) == "installed"


def test_the_agent_endpoints_answer_only_over_https(client, installed):
    config = installed()
    agent = AgentCalls(client)
    body = {"credential": agent.credential, "ticket": config["ticket"]}
    assert client.post("/agent/v1/enroll", json=body).status_code == 404
    assert client.post("/agent/v1/poll", json={}, headers=agent.headers).status_code == 404


def test_the_agent_configuration_only_while_the_install_runs(client, auth, demo_data, arm):
    token = arm(SN)
    assert client.post(f"/install/{token}/agent").status_code == 409
    assert client.post("/install/not-a-token/agent").status_code == 404


def test_no_agent_configuration_without_a_gateway(settings, demo_data, arm):
    """No gateway (agent_listen and agent_public_url empty): 409 saying so,
    not a configuration that points the agent nowhere; no ticket is made."""
    from dataclasses import replace

    from provisiond.services import Services
    from provisiond.web.app import build_app

    services = Services.build(replace(settings, agent_listen="", agent_public_url=""))
    try:
        client = build_app(services=services).test_client()
        token = arm(SN)
        base = f"/install/{token}"
        assert client.get(f"{base}/ks").status_code == 200
        assert client.post(f"{base}/pre-report", json=matching_report(SN)).status_code == 200
        assert client.post(f"{base}/slot").status_code == 200
        answer = client.post(f"{base}/agent")
        assert answer.status_code == 409
        assert "no agent gateway to hand the host to" in answer.get_json()["message"]
        with services.db.read() as session:
            assert session.scalars(select(models.EnrollmentTicket)).all() == []
    finally:
        services.db.dispose()


def test_without_a_ticket_an_agent_waits_for_an_operator(client, auth, installed, services):
    installed()
    agent = AgentCalls(client, serial=SN)
    answer = agent.enroll()
    assert answer.status_code == 202 and answer.get_json()["state"] == "pending"
    refused = agent.poll()
    assert refused.status_code == 403 and refused.get_json()["error"] == "agent_pending"
    listed = client.get("/api/v1/agents?state=pending", headers=auth).get_json()["agents"]
    assert [a["serial"] for a in listed] == [SN] and listed[0]["host"] == SN
    accepted = client.post(f"/api/v1/agents/{listed[0]['id']}/accept", json={}, headers=auth)
    assert accepted.status_code == 200, accepted.get_json()
    assert host_state(client, auth) == "handed_off"
    assert [r["type"] for r in agent.poll().get_json()["runs"]] == ["facts"]


def test_a_rebuilt_host_s_new_key_is_denied_and_shown(client, auth, installed):
    config = installed()
    first = AgentCalls(client, serial=SN)
    assert first.enroll(config["ticket"]).status_code == 201
    impostor = AgentCalls(client, serial=SN, machine_id=first.identity["machine_id"])
    denied = impostor.enroll()
    assert denied.status_code == 403 and denied.get_json()["error"] == "agent_denied"
    assert impostor.poll().get_json()["error"] == "agent_denied"
    states = {a["state"] for a in client.get("/api/v1/agents", headers=auth).get_json()["agents"]}
    assert states == {"accepted", "denied"}
    assert first.poll().status_code == 200


def test_rejecting_and_deleting(client, auth, installed):
    installed()
    agent = AgentCalls(client, serial=SN)
    agent_id = agent.enroll().get_json()["agent_id"]
    assert client.post(f"/api/v1/agents/{agent_id}/reject", headers=auth).status_code == 200
    assert agent.poll().get_json()["error"] == "agent_rejected"
    assert client.delete(f"/api/v1/agents/{agent_id}", headers=auth).status_code == 204
    assert agent.poll().status_code == 401
    assert client.post("/api/v1/agents/999/accept", json={}, headers=auth).status_code == 404


def test_arming_a_reinstall_revokes_the_old_agent(client, auth, installed, arm):
    config = installed()
    old = AgentCalls(client, serial=SN)
    assert old.enroll(config["ticket"]).status_code == 201
    arm(SN, force=True)
    answer = old.poll()
    assert answer.status_code == 403 and answer.get_json()["error"] == "agent_revoked"
    assert old.enroll().status_code == 403


def test_a_viewer_cannot_decide_on_agents(client, auth, installed, services):
    from provisiond.actions.principal import Role
    from provisiond.web.auth import create_token

    installed()
    agent_id = AgentCalls(client, serial=SN).enroll().get_json()["agent_id"]
    with services.db.write() as session:
        viewer = {"Authorization": f"Bearer {create_token(session, 'looker', Role.VIEWER)}"}
    assert client.post(f"/api/v1/agents/{agent_id}/accept", json={}, headers=viewer).status_code == 403
    assert client.get("/api/v1/agents", headers=viewer).status_code == 200
    assert client.get("/api/v1/agents?state=pending", headers=auth).get_json()["agents"][0]["id"] == agent_id
