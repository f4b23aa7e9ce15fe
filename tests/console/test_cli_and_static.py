"""``provisiond users``, ``provisiond demo``'s console login, the vendored htmx."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from click.testing import CliRunner

from provisiond.cli.server import main
from tests.console.conftest import log_in

HTMX = Path(__file__).resolve().parents[2] / "provisiond" / "web" / "console" / "static" / "htmx-2.0.11.min.js"


def _env(settings) -> dict[str, str]:
    return {"PROVISIOND_DATABASE_URL": settings.database_url, "PROVISIOND_DATA_DIR": str(settings.data_dir)}


def test_users_create_list_disable(settings, services, app, tmp_path):
    runner = CliRunner()
    secret = tmp_path / "password"
    secret.write_text("a long enough password\n")
    result = runner.invoke(main, ["users", "create", "ana", "--role", "operator", "--password-file", str(secret)],
                           env=_env(settings))
    assert result.exit_code == 0, result.output
    assert "created user ana (operator)" in result.output
    result = runner.invoke(main, ["users", "create", "bo", "--role", "viewer"], env=_env(settings),
                           input="another password\nanother password\n")
    assert result.exit_code == 0, result.output
    listed = runner.invoke(main, ["users", "list"], env=_env(settings)).output
    assert re.search(r"^ana\toperator\tactive\t", listed, re.M) and re.search(r"^bo\tviewer\tactive\t", listed, re.M)
    assert log_in(app.test_client(), "ana", "a long enough password").status_code == 303
    assert runner.invoke(main, ["users", "disable", "ana"], env=_env(settings)).exit_code == 0
    assert re.search(r"^ana\toperator\tdisabled\t", runner.invoke(main, ["users", "list"], env=_env(settings)).output,
                     re.M)
    assert log_in(app.test_client(), "ana", "a long enough password").status_code == 401
    refused = runner.invoke(main, ["users", "create", "cy", "--role", "viewer", "--password-file", "-"],
                            env=_env(settings), input="short\n")
    assert refused.exit_code != 0 and "at least 8 characters" in str(refused.exception)  # entry() prints it


def test_demo_prints_a_console_login(settings, services, app, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("provisiond.cli.server.PROVCTL_CONFIG", tmp_path / "provctl.yaml")
    result = CliRunner().invoke(main, ["demo", "--no-serve"], env=_env(settings))
    assert result.exit_code == 0, result.output
    match = re.search(r"web console: (http://\S+)/console/ \(user demo, password (\S+);", result.output)
    assert match, result.output
    assert log_in(app.test_client(), "demo", match.group(2)).status_code == 303
    again = CliRunner().invoke(main, ["demo", "--no-serve"], env=_env(settings))
    second = re.search(r"password (\S+);", again.output).group(1)
    assert second != match.group(2)  # a fresh password each start; the old one is dead
    assert log_in(app.test_client(), "demo", match.group(2)).status_code == 401


def test_the_vendored_htmx_is_the_pinned_file(client):
    assert hashlib.sha256(HTMX.read_bytes()).hexdigest() == \
        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
    response = client.get("/console/static/htmx-2.0.11.min.js")  # public: no session needed
    assert response.status_code == 200 and response.data == HTMX.read_bytes()
    assert client.get("/console/static/console.css").status_code == 200
