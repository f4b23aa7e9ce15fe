"""Process roles: `serve` is HTTP and nothing else, `worker` and `netboot`
answer their health, and every role refuses to start where it would do
harm (an out-of-date schema, another secret key)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import text

from provisiond.db import Database, upgrade
from tests.conftest import LiveServer, free_port


def _provisiond(settings, *args, timeout=60, **env):
    return subprocess.run([sys.executable, "-m", "provisiond.cli.server", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir),
                                                "PROVISIOND_DATABASE_URL": settings.database_url, **env})


def _threads(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def test_serve_is_gunicorn_and_nothing_else(settings, services):
    """No thread in the master (it forks its workers), no worker loops, no
    netboot: the HTTP workers are its only children and have none."""
    services.vault  # noqa: B018
    server = LiveServer(settings, workers=2, role="serve", PROVISIOND_NETBOOT_ADDRESS="127.0.0.1")
    try:
        deadline = time.monotonic() + 20
        while len(_children(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = _children(server.process.pid)
        assert len(workers) == 2
        assert _threads(server.process.pid) == 1, "a thread runs in the gunicorn master"
        assert all(_children(pid) == [] for pid in workers)
        assert list((settings.data_dir / "run").glob("*.bell")) == []  # no worker listens here
        assert requests.get(f"{server.url}/readyz", timeout=5).json()["status"] == "ready"
    finally:
        server.stop()


def test_the_roles_refuse_an_out_of_date_schema_naming_the_command(settings, tmp_path):
    old = tmp_path / "old.db"
    from alembic import command

    from provisiond.db import alembic_config

    command.upgrade(alembic_config(f"sqlite:///{old}"), "0004")
    for role in ("serve", "worker", "netboot"):
        done = _provisiond(settings, role, PROVISIOND_DATABASE_URL=f"sqlite:///{old}")
        assert done.returncode != 0, role
        assert "this provisiond needs revision" in done.stderr and "provisiond db upgrade" in done.stderr, done.stderr


def test_two_upgrades_at_once_take_turns(db_url, tmp_path):
    """The migration lock: both end at the newest schema, neither fails."""
    from alembic import command

    from provisiond.db import alembic_config
    from provisiond.migrations import HEAD

    database = Database(db_url)
    try:
        with database.engine.begin() as connection:
            for table in ("work_items", "meta", "audit"):
                connection.execute(text(f"DELETE FROM {table}"))
        command.downgrade(alembic_config(db_url), "0007")
        errors: list[BaseException] = []

        def migrate() -> None:
            try:
                upgrade(db_url)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=migrate) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    finally:
        upgrade(db_url)
        database.dispose()


def test_an_instance_with_another_secret_key_refuses_to_start(settings, services, tmp_path):
    services.vault  # noqa: B018  (the first instance's key)
    first = _provisiond(settings, "tokens", "list")
    assert first.returncode == 0, first.stderr  # seals the database with its key's fingerprint
    missing = tmp_path / "missing" / "secret.key"  # a second instance without the key: never a silent new one
    done = _provisiond(settings, "tokens", "list", PROVISIOND_SECRET_KEY_FILE=str(missing))
    assert done.returncode != 0 and "is missing" in done.stderr and not missing.exists(), done.stderr
    from cryptography.fernet import Fernet

    other = tmp_path / "other.key"  # a second instance with a key of its own
    other.write_bytes(Fernet.generate_key())
    other.chmod(0o600)
    done = _provisiond(settings, "tokens", "list", PROVISIOND_SECRET_KEY_FILE=str(other))
    assert done.returncode != 0 and "but this database was sealed with the key" in done.stderr, done.stderr


def test_the_worker_answers_its_health(settings, services):
    services.vault  # noqa: B018
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "provisiond.cli.server", "worker"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir), "PROVISIOND_DATABASE_URL":
             settings.database_url, "PROVISIOND_WORKER_HEALTH_LISTEN": f"127.0.0.1:{port}"})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        else:
            raise AssertionError("the worker's health listener did not answer")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "problems": [], "role": "worker"}
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()["role"] == "worker"
        assert len(list((settings.data_dir / "run").glob("power-*.bell"))) == 1
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_each_role_tells_systemd_it_is_ready(settings, services, tmp_path):
    """``Type=notify`` units: every role sends READY=1 on NOTIFY_SOCKET (the
    datagram socket systemd gives it) once it serves, and never before."""
    import socket

    services.vault  # noqa: B018
    for role, extra in (("worker", {}), ("netboot", {"PROVISIOND_TFTP_PORT": str(free_port()),
                                                       "PROVISIOND_NETBOOT_ADDRESS": "127.0.0.1"}),
                        ("serve", {"PROVISIOND_HTTP_PORT": str(free_port())})):
        path = tmp_path / f"{role}.notify"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(str(path))
            listener.settimeout(30)
            process = subprocess.Popen(
                [sys.executable, "-m", "provisiond.cli.server", role], stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT, env={**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir),
                                               "PROVISIOND_DATABASE_URL": settings.database_url,
                                               "NOTIFY_SOCKET": str(path), **extra})
            try:
                message = listener.recv(4096).decode()
                assert process.poll() is None
            finally:
                process.terminate()
                process.wait(30)
        assert message.startswith("READY=1"), (role, message)


def test_serve_applies_a_gunicorn_config_but_keeps_its_listeners_and_no_control_socket(settings, services,
                                                                                      tmp_path):
    """``gunicorn_config`` settings apply over provisiond's own (here 3
    workers and a server hook), except the listeners; and no serve creates
    gunicorn's shared control socket (~/.gunicorn/gunicorn.ctl), which one
    instance's stop would delete under another."""
    services.vault  # noqa: B018
    marker = tmp_path / "hook-ran"
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(f"workers = 3\nbind = ['0.0.0.0:1']\n"
                      f"def on_starting(server):\n    open({str(marker)!r}, 'w').write('yes')\n")
    home = tmp_path / "home"
    home.mkdir()
    server = LiveServer(settings, workers=2, role="serve", PROVISIOND_GUNICORN_CONFIG=str(config), HOME=str(home))
    try:
        deadline = time.monotonic() + 20
        while len(_children(server.process.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_children(server.process.pid)) == 3
        assert marker.read_text() == "yes"
        assert requests.get(f"{server.url}/healthz", timeout=5).ok  # still on provisiond's own listener
        assert not (home / ".gunicorn").exists()
    finally:
        server.stop()


def test_a_broken_gunicorn_config_stops_serve_naming_the_file(settings, services, tmp_path):
    services.vault  # noqa: B018
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("workers = (\n")
    done = _provisiond(settings, "serve", PROVISIOND_GUNICORN_CONFIG=str(config), PROVISIOND_HTTP_PORT=str(free_port()))
    assert done.returncode != 0
    assert f"gunicorn_config {config} cannot be loaded: SyntaxError" in done.stderr, done.stderr
