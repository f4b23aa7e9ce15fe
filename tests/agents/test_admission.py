"""Admission control: at most LIMIT agent calls work on the database at
once; the rest wait a moment, then get 503 with a spread Retry-After that
the agent honours; nothing is logged as an error and nothing changes."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from provisiond.agents.admission import Admission
from provisiond.errors import Overloaded
from tests.agents.conftest import SN, AgentCalls


def test_a_place_frees_for_the_next_call():
    admission = Admission(limit=1, wait_seconds=5)
    entered, leave = threading.Event(), threading.Event()

    def hold():
        with admission.admit("first"):
            entered.set()
            leave.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(5)
    leave.set()  # the holder leaves while the next call waits for its place
    with admission.admit("second"):
        pass
    holder.join()
    assert admission.turned_away == 0


def test_no_place_in_time_is_a_503_with_a_spread_retry_after():
    admission = Admission(limit=2, wait_seconds=0.01, spread_seconds=10, rng=random.Random(7))
    with admission.admit("a"), admission.admit("b"):
        delays = []
        for _ in range(50):
            with pytest.raises(Overloaded) as refused:
                with admission.admit("c"):
                    pass
            assert refused.value.status == 503 and refused.value.code == "overloaded"
            delays.append(refused.value.retry_after)
    assert set(delays) <= set(range(1, 11)) and len(set(delays)) >= 5  # spread, so the crowd thins out
    assert admission.turned_away == 50
    with admission.admit("after"):  # the places were given back
        pass


@pytest.fixture
def agent(client, installed):
    config = installed()
    calls = AgentCalls(client, serial=SN)
    assert calls.enroll(config["ticket"]).status_code == 201
    return calls


def test_a_busy_gateway_answers_503_and_logs_no_error(client, services, agent, caplog):
    services.admission = Admission(limit=1, wait_seconds=0.01)  # a crowd holds every place
    with services.admission.admit("the crowd"), caplog.at_level(logging.INFO):
        for answer in (agent.poll(), agent.result(1, "key000000001"), agent.enroll()):
            assert answer.status_code == 503, answer.get_json()
            assert 1 <= int(answer.headers["Retry-After"]) <= 10
            body = answer.get_json()
            assert body["error"] == "overloaded" and "come back in" in body["message"], body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records
    runs = agent.poll().get_json()["runs"]  # room again: the hand-off's first job was kept for it
    assert [r["type"] for r in runs] == ["facts"]
