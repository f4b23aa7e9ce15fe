"""The reaper in `provisiond serve` frees slots of installs that never call back."""

import time

import requests

from tests.conftest import LiveServer, install_token, matching_report


def test_serve_reaps_a_silent_install(settings, services, client, auth, demo_data):
    server = LiveServer(settings, PROVISIOND_INSTALL_TIMEOUT_SECONDS="1", PROVISIOND_REAPER_INTERVAL_SECONDS="1")
    try:
        headers = {"Authorization": auth["Authorization"]}
        assert requests.post(f"{server.url}/api/v1/hosts/712DM2Y/install", json={}, headers=headers).status_code == 201
        token = install_token(services, "712DM2Y")
        base = f"{server.url}/install/{token}"
        requests.get(f"{base}/ks")
        requests.post(f"{base}/pre-report", json=matching_report())
        assert requests.post(f"{base}/slot").status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            host = requests.get(f"{server.url}/api/v1/hosts/712DM2Y", headers=headers).json()
            if host["state"] == "failed":
                break
            time.sleep(0.2)
        assert (host["state"], host["state_reason"]) == ("failed", "timeout")
        assert requests.get(f"{server.url}/api/v1/queue", headers=headers).json()["in_use"] == 0
        assert requests.post(f"{base}/done").status_code == 404  # the late callback changes nothing
    finally:
        server.stop()


def test_reap_command(settings, services, arm, demo_data):
    import os
    import subprocess
    import sys

    from provisiond import models

    arm("712DM2Y")
    with services.db.write() as session:
        for install in session.query(models.Install):
            install.expires_at = models.utcnow()
    env = {**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir),
           "PROVISIOND_DATABASE_URL": settings.effective_database_url}
    result = subprocess.run([sys.executable, "-m", "provisiond.cli.server", "reap"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "reaped 1 install(s): 712DM2Y" in result.stdout


def test_events_older_than_the_retention_are_pruned(services, demo_data, arm):
    import dataclasses
    import datetime as dt

    from sqlalchemy import func, select, update

    from provisiond import models
    from provisiond.install.reaper import prune_events
    from provisiond.services import Services

    arm("712DM2Y")
    with services.db.write() as session:
        total = session.scalar(select(func.count()).select_from(models.Event))
        session.execute(update(models.Event).where(models.Event.kind == "armed")
                        .values(time=models.utcnow() - dt.timedelta(days=400)))
    assert prune_events(services) == 1  # 365 days by default
    keep = Services(dataclasses.replace(services.settings, event_retention_days=0), services.db)
    with services.db.write() as session:
        session.execute(update(models.Event).values(time=models.utcnow() - dt.timedelta(days=4000)))
    assert prune_events(keep) == 0
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(models.Event)) == total - 1
