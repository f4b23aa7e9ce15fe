"""Console fixtures: a user per role and a logged-in test client for each."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from provisiond.actions import users as user_actions
from provisiond.actions.principal import SYSTEM, Role

PASSWORD = "correct horse battery"
#: One user per role: name -> role.
USERS = {"ada": Role.ADMIN, "otto": Role.OPERATOR, "vera": Role.VIEWER}


@pytest.fixture(autouse=True)
def quick_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id with small costs in these tests (the defaults take 64 MiB
    and tens of milliseconds a hash, by design); the hash is the same kind."""
    from argon2 import PasswordHasher

    from provisiond import passwords

    quick = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", quick)
    monkeypatch.setattr(passwords, "_DUMMY", quick.hash("provisiond: no such user"))


@pytest.fixture
def console_users(services: Any) -> dict[Role, str]:
    for name, role in USERS.items():
        user_actions.create(services, SYSTEM, name, role, PASSWORD)
    return {role: name for name, role in USERS.items()}


def csrf_of(html: str) -> str:
    """The CSRF token a console page carries (its forms' hidden field)."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


def log_in(client: Any, name: str, password: str = PASSWORD, **environ: Any) -> Any:
    page = client.get("/console/login", environ_base=environ)
    return client.post("/console/login", data={"name": name, "password": password,
                                               "csrf_token": csrf_of(page.get_data(as_text=True))},
                       environ_base=environ)


@pytest.fixture
def browse(app: Any, console_users: dict[Role, str], demo_data: None) -> Any:
    """``browse(role)``: a test client logged in as that role's user."""
    def _client(role: Role) -> Any:
        client = app.test_client()
        response = log_in(client, console_users[role])
        assert response.status_code == 303, response.get_data(as_text=True)
        return client
    return _client


def page_csrf(client: Any, url: str = "/console/") -> str:
    return csrf_of(client.get(url).get_data(as_text=True))


# --------------------------------------------------------------------------- a real browser

CHROMIUM = Path("/usr/bin/chromium")
#: Screenshots of every page land here (CI keeps the directory).
ARTIFACTS = Path(os.environ.get("PROVISIOND_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """pytest-playwright launches Debian's chromium (.ci/debian-packages),
    never a browser Playwright would download."""
    from tests.conftest import require

    require(CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install chromium")
    return {"executable_path": str(CHROMIUM), "headless": True,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync"]}


@pytest.fixture(scope="session")
def screenshots() -> Any:
    """``screenshots(page, name)``: a full-page PNG under ARTIFACTS/console."""
    folder = ARTIFACTS / "console"
    folder.mkdir(parents=True, exist_ok=True)

    def shoot(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return shoot
