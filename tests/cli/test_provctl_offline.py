"""provctl without a provisiond server: where it connects, how it fails
(unreachable, no token, bad config), the exit-status table, and the
pure helpers behind ``hosts edit --set``. Runs once, not per database."""

from __future__ import annotations

import click
import pytest
import requests
import yaml

from provisiond.cli import client as api
from provisiond.cli.hosts import edit_changes, parse_assignments, parse_sets, set_path, yaml_scalar
from provisiond.cli.output import ExitStatus, exit_status
from provisiond.cli.provctl import main


def test_help_documents_every_exit_status(offline):
    text = offline("--help").stdout
    block = text.split("Exit status:\n")[1].split("\n\n")[0]
    documented = dict(line.split(None, 1) for line in block.splitlines())
    assert sorted(documented, key=int) == [str(status.value) for status in ExitStatus]
    for status in ExitStatus:
        assert documented[str(status.value)].startswith(status.name.lower().replace("_", " "))
    assert "provisiond tokens create NAME" in text


def test_help_needs_no_server_token_or_readable_config(offline, home):
    broken = home / ".config" / "provisiond" / "provctl.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("url: [unclosed\n")
    for args in (["hosts", "--help"], ["hosts", "edit", "--help"], ["profiles", "render", "--help"]):
        assert "Usage:" in offline(*args).stdout
    assert offline("hosts", "list", status=ExitStatus.USAGE).stderr.startswith(
        f"provctl: cannot read config file {broken}")


def test_closed_port_is_exit_7_without_traceback(offline, closed_url):
    out = offline.run("--url", closed_url, "--token", "t", "hosts", "list", status=ExitStatus.UNREACHABLE)
    assert out.stderr == (f"provctl: cannot reach provisiond at {closed_url}: connection refused "
                          "(is it running? set --url or PROVISIOND_URL)\n")
    assert out.stdout == ""


def test_server_that_never_answers_is_exit_7(offline, silent_url):
    out = offline("--url", silent_url, "--token", "t", "--timeout", "0.3", "hosts", "show", "X",
                  status=ExitStatus.UNREACHABLE)
    assert "timed out" in out.stderr


def test_an_import_whose_answer_is_lost_says_what_may_have_happened(offline, dying_url, tmp_path):
    """The server died after reading the import: provctl cannot know whether
    it was committed, says so, and says how to find out (exit 7)."""
    hosts = tmp_path / "hosts.csv"
    hosts.write_text("serial,hostname,macs,profile\nSN1,h1,52:54:00:aa:00:01,default\n")
    out = offline("--url", dying_url, "--token", "t", "hosts", "import", str(hosts), status=ExitStatus.UNREACHABLE)
    assert "received the request (POST /api/v1/import/hosts) but its answer was lost" in out.stderr
    assert "The import of hosts.csv may or may not have been committed" in out.stderr
    assert "provctl hosts list" in out.stderr and "run the same import again, which is safe" in out.stderr
    assert "cannot reach" not in out.stderr


def test_missing_token_says_how_to_get_one(offline, closed_url):
    out = offline.run("--url", closed_url, "hosts", "list", status=ExitStatus.UNAUTHORIZED)
    assert out.stderr.startswith("provctl: no API token: pass --token, set PROVISIOND_TOKEN")
    assert "provisiond tokens create NAME" in out.stderr


@pytest.mark.parametrize("content, problem", [
    ("- a list\n", "must be a mapping with url and token"),
    ("url: http://x\npassword: y\n", "unknown key(s) password"),
    ("token: 12\n", "token must be text"),
])
def test_bad_config_file_is_a_usage_error(offline, tmp_path, content, problem):
    path = tmp_path / "provctl.yaml"
    path.write_text(content)
    out = offline("--config", str(path), "hosts", "list", status=ExitStatus.USAGE)
    assert out.stderr.startswith(f"provctl: config file {path}") and problem in out.stderr


def test_named_config_file_must_exist_and_url_needs_a_scheme(offline, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert offline("--config", str(missing), "hosts", "list", status=ExitStatus.USAGE).stderr == (
        f"provctl: config file {missing} does not exist\n")
    out = offline("--url", "127.0.0.1:8080", "--token", "t", "hosts", "list", status=ExitStatus.USAGE)
    assert "must start with http:// or https://" in out.stderr


def test_resolution_order(home, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(home))
    assert api.resolve_connection(None, None, None) == api.ConnectionSettings(
        "http://127.0.0.1:8080", None, str(home / ".config/provisiond/provctl.yaml"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"url": "http://file:1/", "token": "from-file"}))
    assert api.resolve_connection(None, None, str(config)) == api.ConnectionSettings(
        "http://file:1", "from-file", str(config))
    assert api.resolve_connection("https://given", "given", str(config)) == api.ConnectionSettings(
        "https://given", "given", str(config))


# --------------------------------------------------------------------------- errors → statuses


def _response(status: int, body: bytes, content_type: str = "application/json") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.reason = "Reason"
    response._content = body
    response.headers["Content-Type"] = content_type
    return response


@pytest.mark.parametrize("status, expected", [
    (400, ExitStatus.INVALID), (413, ExitStatus.INVALID), (401, ExitStatus.UNAUTHORIZED),
    (404, ExitStatus.NOT_FOUND), (409, ExitStatus.CONFLICT), (500, ExitStatus.ERROR), (502, ExitStatus.ERROR),
])
def test_http_status_to_exit_status(status, expected):
    error = api.api_error(_response(status, b'{"error": "x", "message": "m"}'))
    assert exit_status(error) == expected


def test_other_errors_to_exit_status():
    assert exit_status(api.Unreachable("x")) == ExitStatus.UNREACHABLE
    assert exit_status(api.MissingToken("f")) == ExitStatus.UNAUTHORIZED
    assert exit_status(api.ConfigurationError("x")) == ExitStatus.USAGE
    assert exit_status(api.BadResponse("x")) == ExitStatus.ERROR


def test_error_messages_name_field_and_location():
    located = api.api_error(_response(400, b'{"error": "invalid", "message": "bad", "field": "ip", '
                                           b'"location": "h.csv:3"}'))
    assert located.message == "h.csv:3: ip: bad"
    already = api.api_error(_response(400, b'{"error": "invalid", "message": "h.csv:3: ip: bad", "field": "ip", '
                                           b'"location": "h.csv:3"}'))
    assert already.message == "h.csv:3: ip: bad"
    proxy = api.api_error(_response(502, b"<html><body>Bad   gateway</body></html>", "text/html"))
    assert isinstance(proxy, api.ServerError)
    assert proxy.message == "server error (HTTP 502): HTTP 502 Reason: <html><body>Bad gateway</body></html>"


# --------------------------------------------------------------------------- hosts edit --set


@pytest.mark.parametrize("text, value", [
    ("16", 16), ("true", True), ("web", "web"), ("", None), ("[10.0.0.2, 10.0.0.3]", ["10.0.0.2", "10.0.0.3"]),
    ("52:54:00:00:00:01", "52:54:00:00:00:01"), ("10:30", "10:30"), ('"4"', "4"), ("1.5", 1.5),
])
def test_values_are_yaml_scalars_but_colon_numbers_stay_text(text, value):
    assert yaml_scalar(text) == value


def test_set_path_copies_and_creates_mappings():
    base = {"cpus": 4, "disks": None}
    assert set_path(base, ["cpus"], 16) == {"cpus": 16, "disks": None}
    assert base == {"cpus": 4, "disks": None}
    assert set_path(None, ["a", "b"], 1) == {"a": {"b": 1}}
    assert set_path({"a": 1}, [], "x") == "x"


def test_edit_changes_are_a_merge_patch_of_the_sets():
    """--set a.b=v becomes {"a": {"b": v}} (the server merges, RFC 7396);
    an empty value is null (clears); the --file patch is not modified."""
    patch = {"owner": "ops", "variables": {"z": 1}}
    sets = parse_sets(["variables.b=2", "bmc.user=admin", "variables.a=3", "ip="])
    changes = edit_changes(patch, sets)
    assert changes == {"owner": "ops", "variables": {"z": 1, "a": 3, "b": 2}, "bmc": {"user": "admin"}, "ip": None}
    assert patch == {"owner": "ops", "variables": {"z": 1}}


def test_a_password_on_the_command_line_is_refused_before_any_request(offline, closed_url):
    out = offline("--url", closed_url, "--token", "t", "hosts", "edit", "SN1", "--set", "bmc.password=hunter2",
                  status=ExitStatus.USAGE)
    assert "a password never goes on the command line: use --bmc-password" in out.stderr


@pytest.mark.parametrize("item", ["variables..a=1", "no-equals-sign", "=1", "a=[unclosed"])
def test_bad_set_is_a_usage_error_before_any_request(offline, closed_url, item):
    out = offline("--url", closed_url, "--token", "t", "hosts", "edit", "SN1", "--set", item,
                  status=ExitStatus.USAGE)
    assert out.stderr.splitlines()[-1].startswith("Error: Invalid value for --set: ")


def test_assignments():
    assert parse_assignments(["a=1", "b=x=y", "c="]) == {"a": 1, "b": "x=y", "c": None}
    with pytest.raises(click.BadParameter):
        parse_assignments(["=1"])


def test_main_is_the_console_entry_point():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["provctl"] == "provisiond.cli.provctl:main"
    assert isinstance(main, click.Group)
