"""Hooks are queued with the change that fires them and run by the worker,
with their documented environment; failures and hangs become events, are
retried with backoff, and never block a request."""

import dataclasses
import time

import pytest

from provisiond.services import Services
from provisiond.web.app import build_app
from tests.conftest import DEMO_HOSTS, install_token, matching_report, metric


@pytest.fixture
def hooked(settings, tmp_path, services):
    hooks = tmp_path / "hooks"
    out = tmp_path / "out"
    out.mkdir()

    def script(event: str, name: str, body: str) -> None:
        folder = hooks / f"{event}.d"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    script("on-armed", "10-record", f"env | grep ^PROVISIOND_ | sort > {out}/armed.env\necho recorded\necho 'second line'\n")
    script("on-armed", "20-fail", "echo 'no ticket system' >&2\nexit 3\n")
    script("on-armed", "30-hang", "sleep 30\n")
    script("on-installing", "10-slot", f"env | grep ^PROVISIOND_ | sort > {out}/installing.env\n")
    script("on-installed", "10-done", f"echo $PROVISIOND_SERIAL > {out}/installed\n")
    script("on-failed", "10-why", f"echo $PROVISIOND_REASON > {out}/failed\n")
    (hooks / "on-armed.d" / "99-not-executable").write_text("#!/bin/sh\nexit 1\n")
    svc = Services.build(dataclasses.replace(settings, hooks_dir=hooks, hook_timeout_seconds=1,
                                             hook_attempts=1))
    client = build_app(services=svc).test_client()
    from provisiond.web.auth import create_token

    with svc.db.write() as session:
        headers = {"Authorization": f"Bearer {create_token(session, 'hooks')}"}
    client.post("/api/v1/import/hosts?filename=hosts.yaml", data=DEMO_HOSTS.read_bytes(),
                headers={**headers, "Content-Type": "application/yaml"})
    yield svc, client, headers, out
    svc.db.dispose()


def run_hooks(svc) -> int:
    """What the worker does: carry out every queued hook."""
    from provisiond.worker.runner import WorkRunner

    return WorkRunner(svc).run_pending()


def hook_runs(hook, outcome, event="on-armed"):
    return metric("provisiond_hook_runs_total", event=event, hook=hook, outcome=outcome)


def test_hooks_get_their_environment_and_report_outcomes(hooked):
    svc, client, headers, out = hooked
    before = [hook_runs("10-record", "ok"), hook_runs("20-fail", "failed"), hook_runs("30-hang", "timeout")]
    started = time.monotonic()
    assert client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers).status_code == 201
    assert time.monotonic() - started < 1, "a hanging hook must not block the request"
    run_hooks(svc)
    env = dict(line.split("=", 1) for line in (out / "armed.env").read_text().splitlines())
    assert env == {
        "PROVISIOND_EVENT": "on-armed", "PROVISIOND_SERIAL": "712DM2Y", "PROVISIOND_HOSTNAME": "db01.example.com",
        "PROVISIOND_MAC": "00:26:b9:35:e9:aa", "PROVISIOND_IP": "10.0.0.10", "PROVISIOND_PROFILE": "mysql_server",
        "PROVISIOND_STATE": "armed", "PROVISIOND_REASON": "",
    }
    messages = [e["message"] for e in client.get("/api/v1/hosts/712DM2Y/events", headers=headers)
                .get_json()["events"] if e["kind"] == "hook"]
    assert messages == [
        "hook 10-record ran: recorded\\nsecond line",  # one timeline line, whatever the hook prints
        "hook 20-fail failed with exit status 3: no ticket system",
        "hook 30-hang killed after 1 s",
    ]
    assert [hook_runs("10-record", "ok"), hook_runs("20-fail", "failed"), hook_runs("30-hang", "timeout")] == \
        [count + 1 for count in before]


def test_a_hook_removed_before_it_ran_is_counted_as_an_error(hooked):
    svc, client, headers, out = hooked
    before = hook_runs("10-record", "error"), hook_runs("10-record", "ok")
    assert client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers).status_code == 201
    (svc.settings.hooks_dir / "on-armed.d" / "10-record").unlink()
    run_hooks(svc)
    assert (hook_runs("10-record", "error"), hook_runs("10-record", "ok")) == (before[0] + 1, before[1])


def test_installing_installed_and_failed_hooks(hooked):
    svc, client, headers, out = hooked
    client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers)
    token = install_token(svc, "712DM2Y")
    client.get(f"/install/{token}/ks")
    client.post(f"/install/{token}/pre-report", json=matching_report())
    client.post(f"/install/{token}/slot")
    client.post(f"/install/{token}/done")
    client.post("/api/v1/hosts/SN-WEB-0001/install", json={}, headers=headers)
    client.post("/api/v1/hosts/SN-WEB-0001/cancel", headers=headers)
    run_hooks(svc)
    env = dict(line.split("=", 1) for line in (out / "installing.env").read_text().splitlines())
    assert env == {  # a grant is written without loading the host: the hook still learns all of it
        "PROVISIOND_EVENT": "on-installing", "PROVISIOND_SERIAL": "712DM2Y", "PROVISIOND_HOSTNAME": "db01.example.com",
        "PROVISIOND_MAC": "00:26:b9:35:e9:aa", "PROVISIOND_IP": "10.0.0.10", "PROVISIOND_PROFILE": "mysql_server",
        "PROVISIOND_STATE": "installing", "PROVISIOND_REASON": "",
    }
    assert (out / "installed").read_text().strip() == "712DM2Y"
    assert (out / "failed").read_text().strip() == "cancelled"


def test_no_hook_fires_for_a_rolled_back_change(hooked):
    svc, client, headers, out = hooked
    client.patch("/api/v1/hosts/712DM2Y", json={"protected": True}, headers=headers)
    assert client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers).status_code == 409
    run_hooks(svc)
    assert not (out / "armed.env").exists()


def test_a_failing_hook_is_retried_with_backoff_each_attempt_an_event(hooked, monkeypatch):
    """The work queue: a hook that fails is queued again, backing off; after
    its last attempt it is failed for good. Nothing is lost by a restart:
    the items live in the database."""
    import datetime as dt

    from sqlalchemy import select

    from provisiond import models
    from provisiond.worker import queue

    svc, client, headers, out = hooked

    def work_items():
        return {outcome: metric("provisiond_work_items_total", kind="hook", outcome=outcome)
                for outcome in ("done", "retry", "failed")}

    retrying = Services(dataclasses.replace(svc.settings, hook_attempts=2), svc.db)
    client2 = build_app(services=retrying).test_client()
    assert client2.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers).status_code == 201
    before = work_items()
    assert run_hooks(retrying) == 3  # three hooks, one attempt each
    assert {k: v - before[k] for k, v in work_items().items()} == {"done": 1, "retry": 2, "failed": 0}
    with svc.db.read() as session:
        items = {i.payload["script"]: i for i in session.scalars(select(models.WorkItem))}
    assert {name: (i.state, i.attempts) for name, i in items.items()} == {
        "10-record": ("done", 1), "20-fail": ("queued", 1), "30-hang": ("queued", 1)}
    assert items["20-fail"].run_after > models.utcnow() + dt.timedelta(seconds=3)  # backing off
    monkeypatch.setattr(queue, "BACKOFF", dt.timedelta(0))
    with svc.db.write() as session:  # the backoff passes
        session.execute(models.WorkItem.__table__.update().values(run_after=models.utcnow()))
    assert run_hooks(retrying) == 2
    with svc.db.read() as session:
        states = {i.payload["script"]: (i.state, i.attempts) for i in session.scalars(select(models.WorkItem))}
    assert states == {"10-record": ("done", 1), "20-fail": ("failed", 2), "30-hang": ("failed", 2)}
    assert {k: v - before[k] for k, v in work_items().items()} == {"done": 1, "retry": 2, "failed": 2}
    work = [e["message"] for e in client.get("/api/v1/hosts/712DM2Y/events", headers=headers).get_json()["events"]
            if e["kind"] == "work"]
    assert any("hook 20-fail: attempt 1 of 2 failed" in m and "again in 5 s" in m for m in work), work
    assert any(m.startswith("hook 20-fail: gave up after 2 attempt(s)") for m in work), work


def test_a_hook_whose_worker_died_runs_again_when_its_lease_passes(hooked):
    from sqlalchemy import select

    from provisiond import models
    from provisiond.worker import queue

    svc, client, headers, out = hooked
    client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers)
    now = models.utcnow()
    import datetime as dt

    with svc.db.kept_write() as connection:  # a worker claims everything, then dies
        claimed = queue.claim(connection, now, dt.timedelta(seconds=-1), 10)
    assert len(claimed) == 3
    assert run_hooks(svc) == 3  # the leases have passed: claimed again and carried out
    assert (out / "armed.env").exists()
    with svc.db.read() as session:
        assert [i.attempts for i in session.scalars(select(models.WorkItem))] == [2, 2, 2]


def test_a_worker_whose_lease_ran_out_changes_nothing_when_it_reports(hooked):
    """A stalled worker comes back after its item was claimed again and
    carried out by another: its late success or failure is not recorded."""
    import datetime as dt

    from sqlalchemy import func, select

    from provisiond import models
    from provisiond.worker import queue

    svc, client, headers, out = hooked
    client.post("/api/v1/hosts/712DM2Y/install", json={}, headers=headers)
    now = models.utcnow()
    with svc.db.kept_write() as connection:  # the stalled worker's claim, its lease already gone
        stale = queue.claim(connection, now, dt.timedelta(seconds=-1), 10)
    assert run_hooks(svc) == 3  # another worker claims them again and finishes them
    with svc.db.read() as session:
        before = [(i.state, i.attempts, i.last_error) for i in session.scalars(select(models.WorkItem)
                                                                                 .order_by(models.WorkItem.id))]
        lines = session.scalar(select(func.count()).select_from(models.Event))
    with svc.db.kept_write() as connection:
        queue.succeeded(connection, stale[0], now)
        assert queue.failed(connection, stale[1], "late", now, "hook") is False
        queue.failed(connection, stale[2], "late", now, "hook")
    with svc.db.read() as session:
        assert [(i.state, i.attempts, i.last_error) for i in session.scalars(select(models.WorkItem)
                                                                               .order_by(models.WorkItem.id))] == before
        assert session.scalar(select(func.count()).select_from(models.Event)) == lines
