"""The hand-off: the profile's hand-off jobs run in order after the agent
enrolls; all succeed → READY; one fails → HANDED_OFF, and a retry starts
the chain again."""

from __future__ import annotations

import json

import pytest

from tests.agents.conftest import SN, AgentCalls, host_state, timeline


@pytest.fixture
def agent(client, installed):
    config = installed()  # 712DM2Y: mysql_server (facts, enable mysqld, start mysqld)
    calls = AgentCalls(client, serial=SN)
    assert calls.enroll(config["ticket"]).status_code == 201
    return calls


def step(agent, expected_type, status="succeeded", output=""):
    runs = agent.poll().get_json()["runs"]
    assert [r["type"] for r in runs] == [expected_type], runs
    answer = agent.result(runs[0]["run_id"], f"key{runs[0]['run_id']:09d}",
                          status=status, exit_code=0 if status == "succeeded" else 1, output=output)
    assert answer.status_code == 200, answer.get_json()
    return runs[0]


def test_every_step_in_order_then_ready(client, auth, agent):
    facts = {"os": {"ID": "rocky", "VERSION_ID": "9.4"}, "kernel": "5.14.0"}
    step(agent, "facts", output=json.dumps(facts))
    enable = step(agent, "service")
    assert enable["payload"] == {"action": "enable", "unit": "mysqld.service"}
    assert host_state(client, auth) == "handed_off"
    start = step(agent, "service")
    assert start["payload"]["action"] == "start"
    assert host_state(client, auth) == "ready"
    assert agent.poll().get_json()["runs"] == []
    shown = client.get(f"/api/v1/hosts/{SN}/facts", headers=auth).get_json()
    assert shown["facts"] == facts and shown["facts_at"]
    assert "hand-off done: 3 job(s) succeeded" in timeline(client, auth)[-1]["message"]


def test_a_failed_step_stops_the_chain_and_a_retry_starts_it_again(client, auth, agent):
    step(agent, "facts", output="{}")
    step(agent, "service", status="failed")
    assert host_state(client, auth) == "handed_off"
    assert agent.poll().get_json()["runs"] == []
    assert "hand-off stopped: step 2" in timeline(client, auth)[-1]["message"]
    retried = client.post(f"/api/v1/hosts/{SN}/handoff/retry", headers=auth)
    assert retried.status_code == 200, retried.get_json()
    for kind in ("facts", "service", "service"):
        step(agent, kind, output="{}")
    assert host_state(client, auth) == "ready"
    assert client.post(f"/api/v1/hosts/{SN}/handoff/retry", headers=auth).status_code == 409


def test_a_retry_while_the_hand_off_runs_is_refused(client, auth, agent):
    conflict = client.post(f"/api/v1/hosts/{SN}/handoff/retry", headers=auth)
    assert conflict.status_code == 409 and "still running" in conflict.get_json()["message"]


def test_a_profile_with_a_bad_hand_off_job_does_not_load(tmp_path):
    from provisiond.errors import ProfileError
    from provisiond.kickstart.profiles import ProfileStore

    (tmp_path / "bad.yaml").write_text("name: bad\nextends: default\nhandoff_jobs:\n  - {type: exec, payload: {}}\n")
    from provisiond.config import SHIPPED_PROFILES

    with pytest.raises(ProfileError, match=r"handoff_jobs\[1\]: type: 'exec' is not a job type"):
        ProfileStore([tmp_path, SHIPPED_PROFILES]).get("bad")
