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
    with services.db.kept_write() as connection:
        return [claimed.operation_id for claimed in queue.claim(connection, now or utcnow(), LEASE, limit)]


def finish(services, operation_id, ok, result, message):
    with services.db.kept_write() as connection:
        return queue.finish(connection, [queue.Finished(operation_id, ok, result, message, utcnow())])


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
    finish(services, first, True, "pxe (next boot only)", "done")
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
    with services.db.kept_write() as connection:
        assert queue.requeue_abandoned(connection, start + LEASE / 2) == []
        assert queue.requeue_abandoned(connection, start + LEASE * 2) == [operation_id]
    assert statuses(services) == {operation_id: "queued"}
    message = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"][-1]["message"]
    assert message == (f"operation {operation_id} (power reset (power on if off)) was interrupted "
                       "(its worker stopped); queued again")
    assert claim(services) == [operation_id]


def test_finish_records_the_outcome_once(services, demo_data):
    operation_id = enqueue(services, "712DM2Y")
    claim(services)
    assert finish(services, operation_id, False, None, "operation 1: power on failed: no") == [operation_id]
    assert finish(services, operation_id, True, "on", "late second answer") == []  # ignored
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


def test_a_claim_carries_what_the_worker_needs_and_work_of_decrypts_the_password(services, demo_data, client, auth):
    client.patch("/api/v1/hosts/712DM2Y", json={"bmc": {"password": "s3cret", "port": 6230}}, headers=auth)
    operation_id = enqueue(services, "712DM2Y", "bootdev", "disk", persistent=True)
    with services.db.kept_write() as connection:
        [claimed] = queue.claim(connection, utcnow(), LEASE, 10)
    assert (claimed.operation_id, claimed.action, claimed.argument, claimed.persistent) == \
        (operation_id, "bootdev", "disk", True)
    assert (claimed.serial, claimed.bmc_type, claimed.bmc_address, claimed.bmc_port, claimed.bmc_user,
            claimed.mac) == ("712DM2Y", "fake", "192.168.0.10", 6230, "root", "00:26:b9:35:e9:aa")
    assert claimed.bmc_secret and "s3cret" not in claimed.bmc_secret  # encrypted at rest
    work = queue.work_of(claimed, services.vault)
    assert (work.target.password, work.target.key) == ("s3cret", "fake:192.168.0.10:6230")


def test_work_of_refuses_a_host_that_lost_its_bmc(services, demo_data):
    enqueue(services, "712DM2Y")
    with services.db.write() as session:
        get_host(session, "712DM2Y").bmc_type = None
    with services.db.kept_write() as connection:
        [claimed] = queue.claim(connection, utcnow(), LEASE, 10)
    with pytest.raises(NoBmc, match="host 712DM2Y has no BMC"):
        queue.work_of(claimed, services.vault)


def test_finish_writes_one_event_per_recorded_outcome(services, demo_data, client, auth):
    first, other = enqueue(services, "712DM2Y"), enqueue(services, "SN-WEB-0001", "power", "status")
    claim(services)
    with services.db.kept_write() as connection:
        assert queue.finish(connection, [
            queue.Finished(first, True, "powered on", f"operation {first}: power on: powered on", utcnow()),
            queue.Finished(other, False, None, f"operation {other}: failed: no", utcnow()),
            queue.Finished(first, True, "again", "a second outcome", utcnow()),  # not running any more
        ]) == [first, other]
    for serial, operation_id, status in (("712DM2Y", first, "done"), ("SN-WEB-0001", other, "failed")):
        event = client.get(f"/api/v1/hosts/{serial}/events", headers=auth).get_json()["events"][-1]
        assert (event["kind"], event["data"]["operation"], event["data"]["status"]) == ("power", operation_id, status)
    assert statuses(services) == {first: "done", other: "failed"}
