"""The power worker with the fake driver: it carries queued operations out,
records their outcome, retries within the budget and survives a restart."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time

import pytest
from sqlalchemy.exc import OperationalError

from provisiond.inventory.hosts import get_host
from provisiond.models import utcnow
from provisiond.power import queue
from provisiond.power.worker import PowerWorker
from provisiond.services import Services
from tests.conftest import metric


def fake_state(settings, serial):
    return json.loads((settings.data_dir / "fake-bmc" / f"{serial}.json").read_text())


def enqueue(services, serial, action, argument, persistent=False):
    with services.db.write() as session:
        return queue.enqueue(session, get_host(session, serial), action, argument, persistent=persistent,
                             by="tests", now=utcnow()).id


def run_until_finished(worker: PowerWorker, services, operation_ids, limit=30.0):
    """Passes of the worker (without its thread) until every operation has ended."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        worker.pass_once()
        with services.db.read() as session:
            ops = [queue.get(session, i) for i in operation_ids]
            if all(op.status in ("done", "failed") for op in ops):
                return {op.id: (op.status, op.result, op.message) for op in ops}
        time.sleep(0.05)
    pytest.fail(f"operations {operation_ids} did not finish")


def wait_until_done(services, operation_id, why, limit=20.0):
    """Until a running worker thread has carried the operation out; fails with ``why`` after ``limit`` s."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        with services.db.read() as session:
            if queue.get(session, operation_id).status == "done":
                return
        time.sleep(0.05)
    pytest.fail(why)


@pytest.fixture
def worker(services):
    fast = Services(dataclasses.replace(services.settings, bmc_min_gap_ms=0, bmc_budget_seconds=2), services.db)
    worker = PowerWorker(fast)
    yield worker
    worker._pool.shutdown(wait=True)


def test_operations_run_in_order_and_the_bmc_ends_as_told(worker, services, demo_data):
    ids = [enqueue(services, "712DM2Y", "power", "status"), enqueue(services, "712DM2Y", "bootdev", "pxe"),
           enqueue(services, "712DM2Y", "power", "reset"), enqueue(services, "712DM2Y", "power", "on"),
           enqueue(services, "712DM2Y", "bootdev", "disk", persistent=True),
           enqueue(services, "712DM2Y", "bootdev", "status"), enqueue(services, "712DM2Y", "power", "netboot"),
           enqueue(services, "712DM2Y", "power", "off"), enqueue(services, "712DM2Y", "power", "off")]
    outcomes = run_until_finished(worker, services, ids)
    assert [outcomes[i][:2] for i in ids] == [
        ("done", "off"), ("done", "pxe (next boot only)"), ("done", "was off: powered on"),
        ("done", "already on"), ("done", "disk (persistent)"), ("done", "disk (persistent)"),
        ("done", "boot device pxe (next boot only), then reset"), ("done", "powered off"),
        ("done", "already off")]
    state = fake_state(services.settings, "712DM2Y")
    assert (state["power"], state["bootdev"], state["persistent"]) == ("off", "pxe", False)
    # "already on" and "already off" sent no command: the fake BMC was told exactly these things.
    assert [a["action"] for a in state["actions"]] == ["bootdev pxe", "power on", "bootdev disk persistent",
                                                       "bootdev pxe", "power reset", "power off"]
    message = outcomes[ids[2]][2]
    assert message.startswith(f"operation {ids[2]}: power reset (power on if off): was off: powered on "
                              "(BMC fake 192.168.0.10, ")


def bmc_counts(action, argument, driver="fake"):
    """(ok, failed, timeout, operations timed, seconds observed) so far."""
    labels = {"action": action, "argument": argument, "driver": driver}
    return (*(metric("provisiond_bmc_operations_total", **labels, outcome=o) for o in ("ok", "failed", "timeout")),
            metric("provisiond_bmc_operation_seconds_count", **labels),
            metric("provisiond_bmc_operation_seconds_sum", **labels))


def test_an_unreachable_bmc_fails_within_the_budget_and_says_so(worker, services, demo_data, client, auth):
    client.patch("/api/v1/hosts/712DM2Y", json={"bmc": {"address": "unreachable"}}, headers=auth)
    ok, failed, timeout, timed, seconds = bmc_counts("power", "reset")
    operation_id = enqueue(services, "712DM2Y", "power", "reset")
    started = time.monotonic()
    status, result, message = run_until_finished(worker, services, [operation_id])[operation_id]
    took = time.monotonic() - started
    assert (status, result) == ("failed", None)
    assert message.startswith(f"operation {operation_id}: power reset (power on if off) timed out: BMC fake unreachable "
                              "(host 712DM2Y): power status: no answer (fake BMC marked unreachable); gave up after ")
    assert 1.0 < took < 10  # backoff 0.5 s, 1 s within a 2 s budget; then it stops
    after = bmc_counts("power", "reset")
    assert after[:4] == (ok, failed, timeout + 1, timed + 1)
    assert after[4] - seconds >= 1.5  # its time observed: the two pauses at least
    events = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"]
    assert events[-1]["message"] == message and events[-1]["data"]["status"] == "failed"


def test_a_refused_password_is_not_retried(worker, services, demo_data, client, auth):
    ok, failed, timeout, timed, _ = bmc_counts("power", "status")
    operation_id = enqueue(services, "712DM2Y", "power", "status")
    assert run_until_finished(worker, services, [operation_id])[operation_id][0] == "done"
    client.patch("/api/v1/hosts/712DM2Y", json={"bmc": {"password": "wrong"}}, headers=auth)
    operation_id = enqueue(services, "712DM2Y", "power", "status")
    status, _, message = run_until_finished(worker, services, [operation_id])[operation_id]
    assert status == "failed"
    assert bmc_counts("power", "status")[:4] == (ok + 1, failed + 1, timeout, timed + 2)
    assert message == (f"operation {operation_id}: read the power state failed: BMC fake 192.168.0.10 "
                       "(host 712DM2Y): power status: the BMC refused the password (fake)")
    with services.db.read() as session:
        assert queue.get(session, operation_id).attempts == 1  # claimed once


def test_wake_on_lan_refuses_what_it_cannot_do(worker, services, demo_data, client, auth):
    client.patch("/api/v1/hosts/SN-WEB-0001", json={"bmc": {"type": "wol"}}, headers=auth)
    operation_id = enqueue(services, "SN-WEB-0001", "power", "off")
    status, _, message = run_until_finished(worker, services, [operation_id])[operation_id]
    assert status == "failed"
    assert message.endswith("power off: Wake-on-LAN can only power a machine on")


def test_an_operation_interrupted_by_a_restart_runs_again(worker, services, demo_data):
    operation_id = enqueue(services, "712DM2Y", "power", "on")
    with services.db.kept_write() as connection:  # a worker claimed it and died
        assert [c.operation_id for c in queue.claim(connection, utcnow() - worker.lease * 2, worker.lease, 1)] \
            == [operation_id]
    outcomes = run_until_finished(worker, services, [operation_id])
    assert outcomes[operation_id][:2] == ("done", "powered on")
    with services.db.read() as session:
        assert queue.get(session, operation_id).attempts == 2


def test_the_worker_thread_starts_and_stops(services, demo_data):
    operation_id = enqueue(services, "712DM2Y", "power", "on")
    worker = PowerWorker(services)
    worker.start()
    try:
        wait_until_done(services, operation_id, "the worker thread did not carry the operation out")
    finally:
        worker.stop()
        worker.join(10)
    assert not worker.is_alive()


def test_an_operation_whose_host_lost_its_bmc_fails_and_says_why(worker, services, demo_data):
    operation_id = enqueue(services, "712DM2Y", "power", "on")
    with services.db.write() as session:
        get_host(session, "712DM2Y").bmc_type = None
    status, result, message = run_until_finished(worker, services, [operation_id])[operation_id]
    assert (status, result) == ("failed", None)
    assert message == (f"operation {operation_id}: power on failed: host 712DM2Y has no BMC (bmc.type) in the "
                       "data source any more")


def test_outcomes_that_could_not_be_recorded_are_recorded_by_a_later_pass(worker, services, demo_data,
                                                                          monkeypatch):
    operation_id = enqueue(services, "712DM2Y", "power", "on")
    real_finish, failures = queue.finish, []

    def finish_failing_once(connection, outcomes):
        if not failures:
            failures.append(list(outcomes))
            raise OperationalError("UPDATE power_operations", {}, Exception("the database went away"))
        return real_finish(connection, outcomes)

    monkeypatch.setattr(queue, "finish", finish_failing_once)
    assert worker.pass_once() == 1
    end = time.monotonic() + 10
    while not failures and time.monotonic() < end:  # the BMC thread hands the outcome back
        try:
            worker.pass_once()
        except OperationalError:
            pass
        time.sleep(0.02)
    assert [o.operation_id for o in failures[0]] == [operation_id]
    assert run_until_finished(worker, services, [operation_id])[operation_id][:2] == ("done", "powered on")


def test_an_operation_queued_through_the_api_wakes_the_worker(services, demo_data, client, auth):
    """The API rings the worker's bell after its commit: no waiting for the next poll (an hour here)."""
    sleepy = Services(dataclasses.replace(services.settings, power_poll_ms=3_600_000, bmc_min_gap_ms=0), services.db)
    worker = PowerWorker(sleepy)
    worker.start()
    try:
        time.sleep(0.2)  # the worker's first pass found nothing; it now sleeps on the bell
        queued = client.post("/api/v1/hosts/712DM2Y/power", json={"action": "on"}, headers=auth).get_json()
        wait_until_done(services, queued["id"], "the worker slept through the bell")
    finally:
        worker.stop()
        worker.join(10)
    assert not worker.is_alive()


def test_the_gap_between_commands_to_one_bmc_holds_across_workers(services, demo_data):
    """Worker A carries out the BMC's first operation; worker B (another
    process, another machine perhaps: its own pacer) claims the next at
    once, and still waits out bmc_min_gap_ms from A's last command."""
    gap = 0.8
    slow = Services(dataclasses.replace(services.settings, bmc_min_gap_ms=int(gap * 1000)), services.db)
    first, second = PowerWorker(slow), PowerWorker(slow)
    try:
        one = enqueue(services, "712DM2Y", "power", "on")
        run_until_finished(first, services, [one])
        two = enqueue(services, "712DM2Y", "power", "off")
        started = time.monotonic()
        run_until_finished(second, services, [two])
        with services.db.read() as session:
            ended_first = queue.get(session, one).last_command_at
            began_second = queue.get(session, two).started_at
        assert ended_first is not None
        # B's first command came no sooner than the gap after A's last one.
        assert time.monotonic() - started >= gap * 0.9
        assert began_second >= ended_first - dt.timedelta(seconds=0.05)
    finally:
        for worker in (first, second):
            worker._pool.shutdown(wait=True)
