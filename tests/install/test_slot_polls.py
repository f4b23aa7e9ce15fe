"""Slot polls of a waiting installer: answered read-only while the global cap
is full, written (heartbeat, grant) only when something must change."""

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import func, select

from provisiond import models
from provisiond.config import Settings, load_settings
from provisiond.models import utcnow
from tests.conftest import matching_report

FIRST, SECOND = "712DM2Y", "SN-WEB-0001"
SECOND_REPORT = {"serial": SECOND, "boot_mac": "52:54:00:00:00:01", "nics": [], "cpus": 4, "memory_mib": 8192}


@pytest.fixture
def settings(tmp_path, db_url: str) -> Settings:
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "database_url": db_url,
        "public_url": "http://provisiond.test:8080", "install_cap": 1,
    })


@pytest.fixture
def queued(client, demo_data, arm) -> tuple[str, str]:
    """FIRST holds the only slot; SECOND has asked once and waits (QUEUED)."""
    tokens = arm(FIRST), arm(SECOND)
    for token, report in zip(tokens, (matching_report(), SECOND_REPORT)):
        assert client.get(f"/install/{token}/ks").status_code == 200
        assert client.post(f"/install/{token}/pre-report", json=report).status_code == 200
    assert client.post(f"/install/{tokens[0]}/slot").status_code == 200
    assert client.post(f"/install/{tokens[1]}/slot").status_code == 429
    return tokens


def _rows(services) -> list[Any]:
    with services.db.read() as session:
        installs = session.execute(select(models.Install.__table__).order_by(models.Install.id)).all()
        hosts = session.execute(select(models.Host.id, models.Host.state, models.Host.updated_at)
                                .order_by(models.Host.id)).all()
        events = session.scalar(select(func.count()).select_from(models.Event))
    return [installs, hosts, events]


def test_a_waiting_poll_writes_nothing(client, services, queued):
    before = _rows(services)
    answer = client.post(f"/install/{queued[1]}/slot", headers={"Accept": "text/plain"})
    assert answer.status_code == 429
    assert answer.get_data(as_text=True) == "concurrent install limit 1 reached: position 1, retry in 1 s\n"
    assert answer.headers["Retry-After"] == "1"
    assert _rows(services) == before


def test_the_heartbeat_is_written_once_it_is_old(services, queued):
    lifecycle = services.lifecycle
    before = _rows(services)
    decision = lifecycle.request_slot(services.db, queued[1], utcnow() + dt.timedelta(seconds=1))
    assert not decision.granted and decision.position == 1
    assert _rows(services) == before  # a recent heartbeat: nothing written
    later = utcnow() + lifecycle.limits.heartbeat
    assert not lifecycle.request_slot(services.db, queued[1], later).granted
    with services.db.read() as session:
        assert lifecycle.find_install(session, queued[1], later).last_seen_at == later
    assert _rows(services)[1:] == before[1:]  # the heartbeat only: no state change, no event
    again = _rows(services)
    assert not lifecycle.request_slot(services.db, queued[1], later).granted
    assert _rows(services) == again


def test_a_freed_slot_is_granted_and_then_answered_read_only(client, services, queued):
    assert client.post(f"/install/{queued[0]}/done").status_code == 200
    assert client.post(f"/install/{queued[1]}/slot").status_code == 200
    with services.db.read() as session:
        assert session.scalar(select(models.Host.state).where(models.Host.serial == SECOND)) == "installing"
    before = _rows(services)
    assert services.lifecycle.request_slot(services.db, queued[1], utcnow()).granted  # the holder asks again
    assert _rows(services) == before


def test_bad_tokens_and_states_are_refused_read_only(client, services, demo_data, arm, queued):
    before = _rows(services)
    assert client.post("/install/not-a-token/slot").status_code == 404
    third = arm("SN-NEW-0001")
    assert client.post(f"/install/{third}/slot").status_code == 409  # before its hardware report
    assert client.post(f"/install/{third}/slot").get_json()["message"].endswith(
        "a slot is requested after the hardware report")
    assert _rows(services)[0][:2] == before[0]  # the two installs that were there are untouched


def test_warm_up_changes_nothing(services, queued):
    before = _rows(services)
    services.lifecycle.warm_up(services.db)
    assert _rows(services) == before
