"""Shared fixtures: a database on SQLite and (when configured) PostgreSQL,
settings, services, the Flask app and client, admin tokens, a live server.

Every test that asks for ``db_url`` (directly or through ``app``/``client``)
runs once per database. PostgreSQL runs when ``PROVISIOND_TEST_DATABASE_URL``
is set; under ``CI=true`` its absence is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from provisiond.config import Settings, load_settings
from provisiond.db import Database, normalise_url, upgrade
from provisiond.models import Base
from provisiond.services import Services
from provisiond.web.app import build_app
from provisiond.web.auth import create_token

CI = os.environ.get("CI", "").lower() == "true"
# No agent gateway unless a test asks for one: `provisiond run` and `demo`
# start one on 0.0.0.0:8443 by default, and tests run many servers at once.
os.environ.setdefault("PROVISIOND_AGENT_LISTEN", "")
PG_URL = os.environ.get("PROVISIOND_TEST_DATABASE_URL", "")
DEMO_HOSTS = Path(__file__).resolve().parents[1] / "provisiond" / "demo" / "hosts.yaml"


def require(condition: bool, reason: str) -> None:
    """Skip on a laptop; fail under CI=true, where every prerequisite must be there."""
    if condition:
        return
    if CI:
        pytest.fail(f"CI=true but a prerequisite is missing: {reason}")
    pytest.skip(reason)


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (migrating once is faster)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once."""
    import psycopg

    require(bool(PG_URL), "PROVISIOND_TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)")
    name = f"provisiond_test_{uuid.uuid4().hex[:10]}"
    admin = normalise_url(PG_URL).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "provisiond.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    _truncate(url)
    return url


def _truncate(url: str) -> None:
    database = Database(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with database.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    database.dispose()


# --------------------------------------------------------------------------- the app


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path / "data"),
        "database_url": db_url,
        "public_url": "http://provisiond.test:8080",
    })


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    svc = Services.build(settings)
    yield svc
    svc.db.dispose()


@pytest.fixture
def app(services: Services) -> Any:
    return build_app(services=services)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def admin_token(services: Services) -> str:
    with services.db.write() as session:
        return create_token(session, "tests")


@pytest.fixture
def auth(admin_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def demo_data(client: Any, auth: dict[str, str]) -> None:
    """The sample groups and hosts that `provisiond demo` loads."""
    response = client.post("/api/v1/import/hosts?filename=hosts.yaml", data=DEMO_HOSTS.read_bytes(),
                           headers={**auth, "Content-Type": "application/yaml"})
    assert response.status_code == 200, response.get_json()


# --------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """provisiond in a subprocess: ``provisiond run`` (serve, worker and,
    with netboot_address, netboot, each a process) or one ``role`` alone."""

    def __init__(self, settings: Settings, workers: int = 2, port: int | None = None,
                 arguments: tuple[str, ...] = (), role: str = "run", **extra_env: str) -> None:
        """``port``: the same one as a stopped server's, to model a restart.
        ``arguments``: more for ``provisiond serve``; with ``--port`` among
        them the port and public URL come from the command line alone."""
        on_command_line = "--port" in arguments
        self.port = int(arguments[arguments.index("--port") + 1]) if on_command_line else port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items()
               if not (on_command_line and k in ("PROVISIOND_HTTP_PORT", "PROVISIOND_PUBLIC_URL"))},
            "PROVISIOND_DATA_DIR": str(settings.data_dir),
            "PROVISIOND_DATABASE_URL": settings.database_url,
            "PROVISIOND_HTTP_WORKERS": str(workers),
            "PROVISIOND_LOG_LEVEL": "WARNING",
            **({} if on_command_line else {"PROVISIOND_HTTP_PORT": str(self.port), "PROVISIOND_PUBLIC_URL": self.url}),
            **extra_env,
        }
        self.log = settings.data_dir.parent / "server.log"
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provisiond.cli.server", role, *arguments],
            env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"provisiond exited: {self.log.read_text()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or its worker still booting
                time.sleep(0.1)
        self.stop()  # never leave a server behind
        raise RuntimeError(f"provisiond serve did not answer in 30 s: {self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def live_server(settings: Settings, services: Services) -> Iterator[LiveServer]:
    services.vault  # the key exists before the workers start
    server = LiveServer(settings)
    yield server
    server.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite the golden files under tests/**/golden/ from the current output")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


# --------------------------------------------------------------------------- installs


def install_token(services: Services, serial: str) -> str:
    """The one-time token of the host's active install, unsealed as the netboot side does."""
    from sqlalchemy import select

    from provisiond import models

    with services.db.read() as session:
        sealed = session.scalar(
            select(models.Install.token_sealed).join(models.Host)
            .where(models.Host.serial == serial, models.Install.active.is_(True))
        )
    assert sealed is not None, f"host {serial} has no active install"
    return services.vault.decrypt(sealed)


@pytest.fixture
def arm(client: Any, auth: dict[str, str], services: Services) -> Any:
    """``arm(serial, force=False)`` arms through the admin API and returns the token."""
    def _arm(serial: str, force: bool = False) -> str:
        response = client.post(f"/api/v1/hosts/{serial}/install", json={"force": force}, headers=auth)
        assert response.status_code == 201, response.get_json()
        return install_token(services, serial)
    return _arm


def matching_report(serial: str = "712DM2Y") -> dict[str, Any]:
    """A %pre report that matches the demo host 712DM2Y."""
    return {"serial": serial, "manufacturer": "Dell Inc.", "model": "PowerEdge R710", "cpus": 16,
            "memory_mib": 64000, "boot_mac": "00:26:b9:35:e9:aa",
            "disks": [{"name": "sda", "size_gb": 600, "model": "PERC H700"}],
            "nics": [{"name": "eth0", "mac": "00:26:b9:35:e9:aa", "link": True}]}


# --------------------------------------------------------------------------- metrics


def metric(name: str, **labels: str) -> float:
    """A counter's value as this process sees it (:mod:`provisiond.metrics`);
    0 before its first increment. Tests compare values before and after."""
    from provisiond.metrics import registry

    return registry().get_sample_value(name, labels) or 0.0


#: A scrape's samples: (name, labels) → value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    """A scrape's body, read by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(client: Any, headers: dict[str, str]) -> Samples:
    """``GET /metrics`` through the Flask client."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return parse_metrics(response.get_data(as_text=True))


@pytest.fixture
def viewer(services: Services) -> dict[str, str]:
    """A bearer header with a viewer's token (as a Prometheus server holds)."""
    from provisiond.actions.principal import Role

    with services.db.write() as session:
        return {"Authorization": f"Bearer {create_token(session, 'prometheus', Role.VIEWER)}"}
