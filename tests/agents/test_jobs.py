"""Jobs through the agent endpoints: delivered under a lease, results
recorded once, every run ending in exactly one terminal state; targets;
refusals that change nothing."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from provisiond import models
from tests.agents.conftest import SN, AgentCalls, timeline

SCRIPT = {"type": "script", "payload": {"script": "echo hello"}}


@pytest.fixture
def agent(client, installed):
    config = installed()
    calls = AgentCalls(client, serial=SN)
    assert calls.enroll(config["ticket"]).status_code == 201
    calls.finish_handoff()
    return calls


def submit(client, auth, body=SCRIPT, targets=(SN,)):
    response = client.post("/api/v1/jobs", json={**body, "targets": list(targets)}, headers=auth)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def job(client, auth, job_id):
    return client.get(f"/api/v1/jobs/{job_id}?output=true", headers=auth).get_json()


def test_a_script_job_runs_once_and_its_result_is_recorded(client, auth, agent, services):
    made = submit(client, auth)
    assert made["runs"] == {"queued": 1}
    runs = agent.poll().get_json()["runs"]
    assert [(r["type"], r["payload"]["script"], r["attempt"]) for r in runs] == [("script", "echo hello", 1)]
    assert agent.poll().get_json()["runs"] == []  # leased: not handed out twice
    answer = agent.result(runs[0]["run_id"], "k" * 32, output="hello\n")
    assert answer.status_code == 200 and answer.get_json() == {"recorded": True}
    shown = job(client, auth, made["id"])
    assert shown["finished"] and shown["runs"] == {"succeeded": 1}
    assert shown["hosts"][0]["output"] == "hello\n" and shown["hosts"][0]["exit_code"] == 0
    assert any(e["kind"] == "job" and "succeeded" in e["message"] for e in timeline(client, auth))
    entry = client.get("/api/v1/audit?action=jobs.script", headers=auth).get_json()["entries"][0]
    assert entry["targets"] == [SN] and entry["data"]["digest"] == made["digest"]


def test_a_result_is_recorded_once_and_cannot_be_replayed(client, auth, agent):
    made = submit(client, auth)
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    assert agent.result(run_id, "a" * 32).get_json() == {"recorded": True}
    assert agent.result(run_id, "a" * 32, status="failed").get_json() == {"recorded": False}
    replay = agent.result(run_id, "b" * 32, status="failed", exit_code=1)
    assert replay.status_code == 409
    assert job(client, auth, made["id"])["runs"] == {"succeeded": 1}


def test_an_agent_cannot_post_another_agent_s_result(client, auth, agent):
    submit(client, auth)
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    stranger = AgentCalls(client)
    assert stranger.enroll().status_code == 202
    assert stranger.result(run_id, "c" * 32).status_code == 403  # pending: not even authenticated to act
    bad = client.post(f"/agent/v1/runs/{run_id}/result", json={"key": "d" * 32, "status": "succeeded"},
                      headers={"Authorization": "Bearer pva_" + "x" * 43}, base_url="https://gateway.test")
    assert bad.status_code == 401


def test_a_lease_that_ends_without_a_result_delivers_again_then_times_out(client, auth, agent, services):
    made = submit(client, auth)
    first = agent.poll().get_json()["runs"][0]
    with services.db.write() as session:
        run = session.get(models.JobRun, first["run_id"])
        run.lease_until = models.utcnow() - dt.timedelta(seconds=1)
    again = agent.poll().get_json()["runs"]
    assert [(r["run_id"], r["attempt"]) for r in again] == [(first["run_id"], 2)]
    with services.db.write() as session:
        run = session.get(models.JobRun, first["run_id"])
        run.lease_until = models.utcnow() - dt.timedelta(seconds=1)
        session.get(models.Job, made["id"]).deadline = models.utcnow() - dt.timedelta(seconds=1)
    from provisiond.actions.jobs import expire

    assert expire(services) == 1
    assert job(client, auth, made["id"])["runs"] == {"timed_out": 1}
    late = agent.result(first["run_id"], "e" * 32)
    assert late.status_code == 409  # one terminal state: a late result changes nothing
    assert job(client, auth, made["id"])["runs"] == {"timed_out": 1}


def test_an_offline_agent_s_runs_did_not_run_at_the_deadline(client, auth, agent, services):
    made = submit(client, auth)
    with services.db.write() as session:
        session.get(models.Job, made["id"]).deadline = models.utcnow() - dt.timedelta(seconds=1)
    assert agent.poll().get_json()["runs"] == []  # past its deadline: not started any more
    from provisiond.actions.jobs import expire

    assert expire(services) == 1
    shown = job(client, auth, made["id"])
    assert shown["runs"] == {"did_not_run": 1} and "offline" in shown["hosts"][0]["error"]


def test_a_host_without_an_agent_did_not_run_at_once(client, auth, agent):
    made = submit(client, auth, targets=(SN, "SN-WEB-0001"))
    assert made["runs"] == {"queued": 1, "did_not_run": 1}
    runs = job(client, auth, made["id"])["hosts"]
    assert [r["error"] for r in runs if r["state"] == "did_not_run"] == ["the host has no accepted agent"]


def test_cancelling_a_job(client, auth, agent):
    made = submit(client, auth)
    assert client.post(f"/api/v1/jobs/{made['id']}/cancel", headers=auth).get_json()["cancelled_runs"] == 1
    assert agent.poll().get_json()["runs"] == []
    assert client.post(f"/api/v1/jobs/{made['id']}/cancel", headers=auth).status_code == 409


def test_rerun_failed_hosts_only(client, auth, agent):
    made = submit(client, auth)
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    agent.result(run_id, "f" * 32, status="failed", exit_code=3)
    again = client.post(f"/api/v1/jobs/{made['id']}/rerun", json={"failed": True}, headers=auth)
    assert again.status_code == 201 and again.get_json()["runs"] == {"queued": 1}


def test_a_parked_poll_is_woken_by_a_new_job(client, auth, agent):
    answers = []
    poller = threading.Thread(target=lambda: answers.append(agent.poll(wait=25).get_json()))
    poller.start()
    # Wait until the poll is parked, then queue the job: it must come back with the run, not empty.
    app_services = client.application.extensions["provisiond"]
    while app_services.__dict__.get("parking") is None or app_services.parking.parked == 0:
        threading.Event().wait(0.01)
    submit(client, auth)
    poller.join(30)
    assert [r["type"] for r in answers[0]["runs"]] == ["script"]


@pytest.mark.parametrize("body,field", [
    ({"type": "exec", "payload": {}}, "type"),
    ({"type": "script", "payload": {"script": ""}}, "payload.script"),
    ({"type": "script", "payload": {"script": "id", "interpreter": "perl"}}, "payload.interpreter"),
    ({"type": "script", "payload": {"script": "id", "cwd": "tmp"}}, "payload.cwd"),
    ({"type": "script", "payload": {"script": "id", "user": "root; rm"}}, "payload.user"),
    ({"type": "script", "payload": {"script": "id", "env": {"A B": "x"}}}, "payload.env"),
    ({"type": "script", "payload": {"script": "id", "extra": 1}}, "payload.extra"),
    ({"type": "file", "payload": {"file": "motd", "dest": "etc/motd"}}, "payload.dest"),
    ({"type": "file", "payload": {"file": "motd", "dest": "/etc/../root/x"}}, "payload.dest"),
    ({"type": "file", "payload": {"file": "motd", "dest": "/etc/motd", "mode": "999"}}, "payload.mode"),
    ({"type": "service", "payload": {"action": "mask", "unit": "sshd"}}, "payload.action"),
    ({"type": "service", "payload": {"action": "start", "unit": "ssh d"}}, "payload.unit"),
    ({"type": "script", "payload": {"script": "id"}, "timeout_seconds": 0}, "timeout_seconds"),
])
def test_bad_jobs_are_refused_and_nothing_is_made(client, auth, agent, services, body, field):
    response = client.post("/api/v1/jobs", json={**body, "targets": [SN]}, headers=auth)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["field"] == field
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(models.Job).where(models.Job.purpose == "run")) == 0


def test_targets(client, auth, agent):
    assert submit(client, auth, targets=("all",))["runs"] == {"queued": 1}
    hostname = client.get(f"/api/v1/hosts/{SN}", headers=auth).get_json()["hostname"]
    assert submit(client, auth, targets=(hostname[:3] + "*",))["runs"].get("queued") == 1
    for bad in (["nope-*"], [], ["serial:NOPE"], "all"):
        response = client.post("/api/v1/jobs", json={**SCRIPT, "targets": bad}, headers=auth)
        assert response.status_code == 400 and response.get_json()["field"] == "targets", bad


def test_a_viewer_cannot_run_jobs(client, auth, agent, services):
    from provisiond.actions.principal import Role
    from provisiond.web.auth import create_token

    with services.db.write() as session:
        viewer = {"Authorization": f"Bearer {create_token(session, 'looker', Role.VIEWER)}"}
    assert client.post("/api/v1/jobs", json={**SCRIPT, "targets": [SN]}, headers=viewer).status_code == 403
    assert client.get("/api/v1/jobs", headers=viewer).status_code == 200


def test_bad_results_are_refused(client, auth, agent):
    submit(client, auth)
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    for body in ({"key": "short", "status": "succeeded"}, {"key": "g" * 32, "status": "great"},
                 {"key": "g" * 32, "status": "failed", "exit_code": "1"}):
        response = client.post(f"/agent/v1/runs/{run_id}/result", json=body, headers=agent.headers,
                               base_url="https://gateway.test")
        assert response.status_code == 400, body
    assert agent.result(run_id + 1000, "h" * 32).status_code == 404


def test_output_is_capped_and_marked(client, auth, agent, services):
    made = submit(client, auth)
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    agent.result(run_id, "i" * 32, output="x" * (services.settings.job_output_limit_bytes + 10))
    run = job(client, auth, made["id"])["hosts"][0]
    assert run["output_truncated"] and len(run["output"]) == services.settings.job_output_limit_bytes


def test_files_and_templates_are_delivered_with_their_checksum(client, auth, agent):
    import base64
    import hashlib

    put = client.put("/api/v1/files/motd", data=b"hello {{ host.hostname }}\n", headers=auth)
    assert put.status_code == 201
    assert client.put("/api/v1/files/motd", data=b"x", headers=auth).status_code == 409
    submit(client, auth, {"type": "file", "payload": {"file": "motd", "dest": "/etc/motd"}})
    submit(client, auth, {"type": "template", "payload": {"file": "motd", "dest": "/etc/motd2", "mode": "0600"}})
    runs = agent.poll().get_json()["runs"]
    assert [r["type"] for r in runs] == ["file", "file"]
    raw, rendered = (base64.b64decode(r["payload"]["content_b64"]) for r in runs)
    assert raw == b"hello {{ host.hostname }}\n" and rendered.startswith(b"hello ") and b"{{" not in rendered
    for run, content in zip(runs, (raw, rendered)):
        assert run["payload"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert runs[1]["payload"]["mode"] == "0600"
    missing = client.post("/api/v1/jobs", json={"type": "file", "payload": {"file": "nope", "dest": "/x"},
                                                "targets": [SN]}, headers=auth)
    assert missing.status_code == 404


def test_a_job_for_host_a_never_reaches_host_b(client, auth, agent):
    other = AgentCalls(client, serial="SN-WEB-0001")
    other_id = other.enroll().get_json()["agent_id"]
    assert client.post(f"/api/v1/agents/{other_id}/accept", json={}, headers=auth).status_code == 200
    made = submit(client, auth)  # for 712DM2Y only
    assert other.poll().get_json()["runs"] == []
    run_id = agent.poll().get_json()["runs"][0]["run_id"]
    stolen = other.result(run_id, "j" * 32, status="failed", exit_code=1)
    assert stolen.status_code == 404
    assert job(client, auth, made["id"])["runs"] == {"running": 1}
    assert agent.result(run_id, "k" * 32).get_json() == {"recorded": True}
