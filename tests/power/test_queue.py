"""The power operation queue: validation, per-BMC ordering, claims, leases."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from provisiond import models
from provisiond.errors import ValidationError
from provisiond.inventory.hosts import get_host
from provisiond.models import utcnow
from provisiond.power import queue
from provisiond.power.base import NoBmc

LEASE = dt.timedelta(seconds=60)


def enqueue(services, serial, action="power", argument="on", **kwargs):
    with services.db.write() as session:
        return queue.enqueue(session, get_host(session, serial), action, argument, by="tests", now=utcnow(),
                             **kwargs).id


def claim(services, limit=10, now=None):
    with services.db.write() as session:
        return queue.claim(session, now or utcnow(), LEASE, limit)


def statuses(services):
    with services.db.read() as session:
        return {op.id: op.status for op in session.scalars(select(models.PowerOperation))}


def count(services):
    with services.db.read() as session:
        return session.scalar(select(func.count()).select_from(models.PowerOperation))


@pytest.mark.parametrize("action, argument, field", [
    ("dance", "on", "action"), ("power", "pxe", "argument"), ("bootdev", "reset", "argument"),
])
def test_bad_operations_are_refused_and_nothing_is_queued(services, demo_data, action, argument, field):
    with pytest.raises(ValidationError) as caught:
        enqueue(services, "712DM2Y", action, argument)
    assert caught.value.field == field
    assert count(services) == 0


def test_a_host_without_a_bmc_is_refused_with_409(services, demo_data):
    with pytest.raises(NoBmc) as caught:
        enqueue(services, "SN-NEW-0001")
    assert caught.value.status == 409
    assert "host SN-NEW-0001 has no BMC" in str(caught.value) and "--no-power" in str(caught.value)
    assert count(services) == 0


def test_queueing_writes_an_event_naming_the_operation_and_the_bmc(services, demo_data, client, auth):
    operation_id = enqueue(services, "712DM2Y", "bootdev", "pxe")
    events = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"]
    assert events[-1]["kind"] == "power"
    assert events[-1]["message"] == (f"queued by tests: set the boot device to pxe (next boot only) on BMC "
                                     f"fake 192.168.0.10 (operation {operation_id})")


def test_only_the_oldest_operation_of_each_bmc_is_claimed(services, demo_data):
    first = enqueue(services, "712DM2Y", "bootdev", "pxe")
    second = enqueue(services, "712DM2Y", "power", "reset")
    other = enqueue(services, "SN-WEB-0001", "power", "on")
    assert claim(services) == [first, other]
    assert claim(services) == []  # 712DM2Y's BMC is busy: its second operation waits
    with services.db.write() as session:
        queue.finish(session, first, True, "pxe (next boot only)", "done", utcnow())
    assert claim(services) == [second]
    assert statuses(services) == {first: "done", second: "running", other: "running"}


def test_the_claim_limit_and_not_before_are_honoured(services, demo_data):
    later = utcnow() + dt.timedelta(seconds=30)
    paced = enqueue(services, "712DM2Y", not_before=later)
    now_one = enqueue(services, "SN-WEB-0001")
    assert claim(services, limit=0) == []
    assert claim(services, limit=1) == [now_one]
    assert claim(services) == []
    assert claim(services, now=later) == [paced]


def test_an_operation_is_claimed_once(services, demo_data):
    operation_id = enqueue(services, "712DM2Y")
    claims = [claim(services) for _ in range(3)]
    assert claims == [[operation_id], [], []]
    with services.db.read() as session:
        assert queue.get(session, operation_id).attempts == 1


def test_an_abandoned_operation_is_queued_again_with_an_event(services, demo_data, client, auth):
    operation_id = enqueue(services, "712DM2Y", "power", "reset")
    start = utcnow()
    assert claim(services, now=start) == [operation_id]
    with services.db.write() as session:
        assert queue.requeue_abandoned(session, start + LEASE / 2) == []
        assert queue.requeue_abandoned(session, start + LEASE * 2) == [operation_id]
    assert statuses(services) == {operation_id: "queued"}
    message = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"][-1]["message"]
    assert message == (f"operation {operation_id} (power reset (power on if off)) was interrupted "
                       "(its worker stopped); queued again")
    assert claim(services) == [operation_id]


def test_finish_records_the_outcome_once(services, demo_data):
    operation_id = enqueue(services, "712DM2Y")
    claim(services)
    with services.db.write() as session:
        queue.finish(session, operation_id, False, None, "operation 1: power on failed: no", utcnow())
        queue.finish(session, operation_id, True, "on", "late second answer", utcnow())  # ignored
    with services.db.read() as session:
        operation = queue.get(session, operation_id)
        assert (operation.status, operation.result, operation.message) == \
            ("failed", None, "operation 1: power on failed: no")
        assert operation.finished_at is not None and operation.lease_until is None


def test_install_power_plan_per_driver(services, demo_data, client, auth):
    armed = client.post("/api/v1/hosts/712DM2Y/install", json={"power": True}, headers=auth).get_json()
    with services.db.read() as session:
        plan = [(op.action, op.argument, op.install_id)
                for op in (queue.get(session, i) for i in armed["power_operations"])]
    assert plan == [("power", "netboot", armed["install_id"])]

    client.patch("/api/v1/hosts/SN-WEB-0001", json={"bmc": {"type": "wol"}}, headers=auth)
    armed = client.post("/api/v1/hosts/SN-WEB-0001/install", json={"power": True}, headers=auth).get_json()
    assert len(armed["power_operations"]) == 1
    events = client.get("/api/v1/hosts/SN-WEB-0001/events", headers=auth).get_json()["events"]
    assert any(e["message"] == "wol cannot choose the boot device: the machine must try the network first by "
               "its own boot order" for e in events)
