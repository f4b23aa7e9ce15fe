"""Logging in and out: session cookies, wrong passwords, the rate limit,
disabled users, CSRF on the login form itself."""

from __future__ import annotations

from sqlalchemy import func, select

from provisiond import models
from provisiond.actions import users as user_actions
from provisiond.actions.principal import SYSTEM, Role
from tests.console.conftest import PASSWORD, csrf_of, log_in


def test_pages_send_people_to_the_login_form(client):
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/console/")
    response = client.get("/console/hosts?state=failed")
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/login?next=/console/hosts?state%3Dfailed"
    page = client.get("/console/login")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<label for="name">' in page.get_data(as_text=True)


def test_log_in_and_out(client, console_users, services):
    response = log_in(client, "otto")
    assert response.status_code == 303 and response.headers["Location"] == "/console/"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("provisiond_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test below
    token = cookie.split(";")[0].split("=", 1)[1]
    with services.db.read() as session:
        stored = session.scalars(select(models.ConsoleSession.token_hash)).all()
    assert token not in stored and len(stored) == 1  # only its hash is kept
    page = client.get("/console/")
    assert page.status_code == 200 and ">otto</strong>" in page.get_data(as_text=True)
    out = client.post("/console/logout", data={"csrf_token": csrf_of(page.get_data(as_text=True))})
    assert out.status_code == 303 and "/console/login" in out.headers["Location"]
    assert client.get("/console/").status_code == 303  # the cookie is gone
    client.set_cookie("provisiond_session", token, path="/")  # and a copy of it is dead
    assert client.get("/console/").status_code == 303
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(models.ConsoleSession)) == 0
        actions = [(e.principal, e.action, e.outcome) for e in session.scalars(
            select(models.AuditEntry).where(models.AuditEntry.action.like("users.log%")).order_by(models.AuditEntry.id))]
    assert actions == [("user otto", "users.login", "ok"), ("user otto", "users.logout", "ok")]


def test_the_cookie_is_secure_over_tls(app, console_users):
    client = app.test_client()
    page = client.get("/console/login", base_url="https://console.test")
    response = client.post("/console/login", base_url="https://console.test",
                           data={"name": "ada", "password": PASSWORD, "csrf_token": csrf_of(page.get_data(as_text=True))})
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("provisiond_session="))
    assert "Secure" in cookie


def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(client, console_users, services):
    wrong = log_in(client, "otto", "not the password")
    unknown = log_in(client, "nobody", "not the password")
    for response in (wrong, unknown):
        assert response.status_code == 401 and response.mimetype == "text/html"
        assert "wrong user name or password" in response.get_data(as_text=True)
        assert not any(c.startswith("provisiond_session=") for c in response.headers.getlist("Set-Cookie"))
    with services.db.read() as session:
        refused = session.scalars(select(models.AuditEntry.principal).where(
            models.AuditEntry.action == "users.login", models.AuditEntry.outcome == "refused")).all()
    assert refused == ["user otto", "user nobody"]


def test_failed_logins_are_rate_limited_per_user_and_address(app, client, console_users):
    here = {"REMOTE_ADDR": "192.0.2.7"}
    for _ in range(user_actions.FAILURES_PER_USER_AND_ADDRESS):
        assert log_in(client, "otto", "guess", **here).status_code == 401
    limited = log_in(client, "otto", PASSWORD, **here)  # even the right password, now
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "too many failed logins for otto from 192.0.2.7" in limited.get_data(as_text=True)
    assert log_in(app.test_client(), "otto", PASSWORD, REMOTE_ADDR="192.0.2.8").status_code == 303  # elsewhere
    assert log_in(app.test_client(), "ada", PASSWORD, **here).status_code == 303  # another user from there


def test_one_address_guessing_many_names_is_limited_too(client, console_users):
    here = {"REMOTE_ADDR": "192.0.2.9"}
    for i in range(user_actions.FAILURES_PER_ADDRESS):
        assert log_in(client, f"user{i}", "guess", **here).status_code == 401
    assert log_in(client, "ada", PASSWORD, **here).status_code == 429


def test_a_login_without_its_csrf_token_is_refused(client, console_users):
    response = client.post("/console/login", data={"name": "ada", "password": PASSWORD})
    assert response.status_code == 403 and response.mimetype == "text/html"
    assert "security token" in response.get_data(as_text=True)
    assert not any(c.startswith("provisiond_session=") for c in response.headers.getlist("Set-Cookie"))


def test_after_login_only_console_paths_are_followed(app, console_users):
    for target, expected in (("/console/hosts", "/console/hosts"), ("https://evil.example/", "/console/"),
                             ("//evil.example/console", "/console/"), ("/api/v1/hosts", "/console/")):
        client = app.test_client()
        page = client.get("/console/login")
        response = client.post("/console/login", data={"name": "ada", "password": PASSWORD, "next": target,
                                                       "csrf_token": csrf_of(page.get_data(as_text=True))})
        assert response.headers["Location"] == expected, target


def test_disabling_a_user_ends_their_sessions(client, console_users, services):
    assert log_in(client, "vera").status_code == 303
    assert client.get("/console/").status_code == 200
    user_actions.disable(services, SYSTEM, "vera")
    assert client.get("/console/").status_code == 303
    assert log_in(client, "vera").status_code == 401


def test_an_expired_session_is_refused(client, console_users, services):
    import datetime as dt

    from sqlalchemy import update

    assert log_in(client, "ada").status_code == 303
    with services.db.write() as session:
        session.execute(update(models.ConsoleSession).values(
            expires_at=models.utcnow() - dt.timedelta(seconds=1)))
    assert client.get("/console/").status_code == 303
    live = client.get("/console/live/dashboard", headers={"HX-Request": "true"})
    assert live.headers["HX-Redirect"].startswith("/console/login")  # htmx takes the whole page there


def test_users_are_principals_with_roles(services, console_users):
    listed = {u["name"]: (u["role"], u["state"]) for u in user_actions.listing(services, SYSTEM)}
    assert listed == {"ada": ("admin", "active"), "otto": ("operator", "active"), "vera": ("viewer", "active")}
    import pytest

    from provisiond.errors import Conflict, Forbidden, ValidationError
    from provisiond.actions.principal import Principal

    with pytest.raises(Forbidden):
        user_actions.create(services, Principal("user", "otto", Role.OPERATOR), "eve", "admin", PASSWORD)
    with pytest.raises(Conflict):
        user_actions.create(services, SYSTEM, "ada", "viewer", PASSWORD)
    with pytest.raises(ValidationError, match="at least 8"):
        user_actions.create(services, SYSTEM, "bob", "viewer", "short")
    with services.db.read() as session:
        stored = session.scalar(select(models.User.password_hash).where(models.User.name == "ada"))
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
