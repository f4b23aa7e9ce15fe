"""Facts over time: the first report and every change are on the host's
timeline; the worker's sweep asks online agents whose facts are older than
facts_interval_seconds, once, and never offline ones."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update

from provisiond import models
from provisiond.actions.agents import refresh_facts
from provisiond.agents.facts import changes, first
from tests.agents.conftest import SN, AgentCalls, host_state, timeline

ROCKY = {"os": {"PRETTY_NAME": "Rocky Linux 9.4 (Blue Onyx)"}, "kernel": {"release": "5.14.0-427.el9"},
         "cpu_count": 16, "memory": {"total_bytes": 64 * 1024 ** 3, "available_bytes": 60 * 1024 ** 3},
         "uptime_seconds": 120.5,
         "packages": [{"name": "bash", "version": "5.1.8-9.el9"}, {"name": "mysql-server", "version": "8.0.36-1"}],
         "services": [{"unit": "mysqld.service", "active": "inactive"}, {"unit": "sshd.service", "active": "active"}]}


def updated(**changed):
    return {**json.loads(json.dumps(ROCKY)), **changed}


# ------------------------------------------------------------------ what changed, in words


def test_the_first_report_is_summed_up():
    assert first(ROCKY) == ("first facts: Rocky Linux 9.4 (Blue Onyx), kernel 5.14.0-427.el9, 2 package(s), "
                            "2 service(s)")
    assert changes({}, ROCKY) == [] and changes(None, ROCKY) == []


def test_uptime_and_free_memory_are_not_changes():
    later = updated(uptime_seconds=99999.0, memory={"total_bytes": 64 * 1024 ** 3, "available_bytes": 1})
    assert changes(ROCKY, later) == []


def test_each_change_is_named():
    later = updated(kernel={"release": "5.14.0-503.el9"}, cpu_count=32,
                    packages=[{"name": "bash", "version": "5.1.8-9.el9"}, {"name": "mysql-server", "version": "8.0.40-1"},
                              {"name": "nginx", "version": "1.20.1-14"}],
                    services=[{"unit": "mysqld.service", "active": "active"}])
    assert changes(ROCKY, later) == [
        "kernel 5.14.0-427.el9 -> 5.14.0-503.el9",
        "CPUs 16 -> 32",
        "packages: 1 added (nginx 1.20.1-14), 1 changed (mysql-server 8.0.36-1 -> 8.0.40-1)",
        "services: mysqld.service inactive -> active, sshd.service active -> absent",
    ]


def test_many_package_changes_are_counted_not_all_named():
    later = updated(packages=[{"name": f"p{i:02d}", "version": "1"} for i in range(8)])
    assert changes(ROCKY, later) == [
        "packages: 8 added (p00 1, p01 1, p02 1, p03 1, p04 1 and 3 more), 2 removed (bash, mysql-server)"]


@pytest.mark.parametrize("odd", [{"kernel": "5.14"}, {"os": None, "memory": [], "packages": "x", "services": [1, "a"]},
                                 {"memory": {"total_bytes": True}}])
def test_an_odd_report_never_raises(odd):
    changes(ROCKY, odd)
    changes(odd, ROCKY)
    first(odd)


# ------------------------------------------------------------------ the refresh, end to end


@pytest.fixture
def ready(client, auth, installed):
    """712DM2Y READY, its hand-off's facts job answered with ROCKY."""
    config = installed()
    agent = AgentCalls(client, serial=SN)
    assert agent.enroll(config["ticket"]).status_code == 201
    while runs := agent.poll().get_json()["runs"]:
        for run in runs:
            output = json.dumps(ROCKY) if run["type"] == "facts" else ""
            assert agent.result(run["run_id"], f"handoff{run['run_id']:08d}", output=output).status_code == 200
    assert host_state(client, auth) == "ready"
    return agent


def age_facts(services, seconds):
    with services.db.write() as session:
        session.execute(update(models.Agent).values(
            facts_at=models.utcnow() - dt.timedelta(seconds=seconds)))


def answer_facts(agent, reported):
    runs = agent.poll().get_json()["runs"]
    assert [r["type"] for r in runs] == ["facts"], runs
    assert agent.result(runs[0]["run_id"], f"facts{runs[0]['run_id']:08d}",
                        output=json.dumps(reported)).status_code == 200


def test_the_hand_off_facts_are_the_first_on_the_timeline(client, auth, ready):
    said = [e["message"] for e in timeline(client, auth) if e["kind"] == "facts"]
    assert said == ["first facts: Rocky Linux 9.4 (Blue Onyx), kernel 5.14.0-427.el9, 2 package(s), 2 service(s)"]


def test_stale_facts_are_refreshed_once_and_a_change_is_an_event(client, auth, services, ready):
    assert refresh_facts(services) == 0  # fresh: nobody is asked
    age_facts(services, services.settings.facts_interval_seconds + 1)
    assert refresh_facts(services) == 1
    assert refresh_facts(services) == 0  # its facts run is queued: not asked twice
    jobs = client.get("/api/v1/jobs", headers=auth).get_json()["jobs"]
    assert jobs[0]["type"] == "facts" and jobs[0]["created_by"] == "provisiond (facts refresh)", jobs[0]
    answer_facts(ready, updated(kernel={"release": "5.14.0-503.el9"}))
    message = timeline(client, auth)[-1]
    assert (message["kind"], message["message"]) == ("facts", "facts changed: kernel 5.14.0-427.el9 -> 5.14.0-503.el9")
    shown = client.get(f"/api/v1/hosts/{SN}/facts", headers=auth).get_json()
    assert shown["facts"]["kernel"] == {"release": "5.14.0-503.el9"}
    with services.db.read() as session:
        audit = session.scalars(select(models.AuditEntry).where(models.AuditEntry.action == "jobs.facts")).all()
    assert [(r.principal, r.targets, r.outcome) for r in audit] == [("system provisiond", f"|{SN}|", "ok")]


def test_facts_that_did_not_change_write_no_event(client, auth, services, ready):
    before = timeline(client, auth)
    age_facts(services, services.settings.facts_interval_seconds + 1)
    assert refresh_facts(services) == 1
    answer_facts(ready, updated(uptime_seconds=7200.0))
    after = timeline(client, auth)
    assert [e for e in after if e["kind"] == "facts"] == [e for e in before if e["kind"] == "facts"]


def test_an_offline_agent_is_not_asked(client, auth, services, ready):
    age_facts(services, services.settings.facts_interval_seconds + 1)
    with services.db.write() as session:
        session.execute(update(models.Agent).values(last_seen_at=models.utcnow() - dt.timedelta(hours=2)))
    assert refresh_facts(services) == 0


def test_no_refresh_when_the_interval_is_zero(services, ready):
    from dataclasses import replace

    age_facts(services, 10 ** 6)
    services.settings = replace(services.settings, facts_interval_seconds=0)
    assert refresh_facts(services) == 0


def test_a_new_agent_without_facts_is_asked_an_interval_after_it_was_accepted(client, services, installed):
    """No facts yet (a hand-off without a facts job, or one still running):
    not asked at once, racing the hand-off, but an interval after acceptance."""
    config = installed()
    agent = AgentCalls(client, serial=SN)
    assert agent.enroll(config["ticket"]).status_code == 201
    with services.db.write() as session:
        session.execute(update(models.JobRun).values(state="cancelled"))  # the hand-off's runs: out of the way
    assert refresh_facts(services) == 0
    with services.db.write() as session:
        session.execute(update(models.Agent).values(
            decided_at=models.utcnow() - dt.timedelta(seconds=services.settings.facts_interval_seconds + 1)))
    assert refresh_facts(services) == 1
