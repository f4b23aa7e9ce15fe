"""provctl against a real ``provisiond serve`` (gunicorn in a subprocess),
on SQLite and on PostgreSQL. Each test shares one live server across many
commands; the fixtures are in ``tests/cli/conftest.py``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from provisiond.cli.output import ExitStatus

KSVALIDATOR = Path(sys.executable).parent / "ksvalidator"
DEMO_SERIALS = ["712DM2Y", "SN-NEW-0001", "SN-WEB-0001"]
NEW_HOST = ["--serial", "SN-CLI-0001", "--hostname", "cli01.example.com", "--mac", "52-54-00-AA-00-01",
            "--ip", "10.0.0.50", "--prefix", "24", "--gateway", "10.0.0.1", "--dns", "10.0.0.2",
            "--profile", "web_server", "--group", "rack-a1", "--site", "hz1", "--rack", "a1",
            "--owner", "ops", "--var", "role=web", "--var", "workers=4"]


def hosts_json(provctl) -> dict:
    return json.loads(provctl("hosts", "list", "--json").stdout)


def table(text: str) -> dict[str, list[str]]:
    """A provctl table keyed by its first column (the header row too)."""
    return {line.split()[0]: line.split() for line in text.splitlines()}


# --------------------------------------------------------------------------- hosts


def test_hosts_list_filters_and_show(provctl, demo_data):
    rows = table(provctl("hosts", "list").stdout)
    assert rows["SERIAL"] == ["SERIAL", "HOSTNAME", "IP", "PRIMARY-MAC", "PROFILE", "STATE", "GROUPS"]
    assert rows["712DM2Y"] == ["712DM2Y", "db01.example.com", "10.0.0.10", "00:26:b9:35:e9:aa",
                               "mysql_server", "idle", "site-hz1,rack-a1"]
    assert rows["SN-NEW-0001"][2] == "-"  # no IP

    assert sorted(table(provctl("hosts", "list", "--group", "rack-a1").stdout)) == ["712DM2Y", "SERIAL", "SN-WEB-0001"]
    assert sorted(table(provctl("hosts", "list", "--profile", "default").stdout)) == ["SERIAL", "SN-NEW-0001"]
    assert sorted(table(provctl("hosts", "list", "-q", "web01").stdout)) == ["SERIAL", "SN-WEB-0001"]
    assert len(table(provctl("hosts", "list", "--limit", "1").stdout)) == 2
    assert table(provctl("hosts", "list", "--state", "armed").stdout) == {"SERIAL": rows["SERIAL"]}

    shown = yaml.safe_load(provctl("hosts", "show", "712DM2Y").stdout)
    assert shown["hostname"] == "db01.example.com" and shown["state"] == "idle"
    assert shown["bmc"] == {"type": "fake", "address": "192.168.0.10", "user": "root", "password_set": False}
    served = requests.get(f"{provctl.url}/api/v1/hosts/712DM2Y",
                          headers={"Authorization": f"Bearer {provctl.token}"}).json()
    assert json.loads(provctl("hosts", "show", "712DM2Y", "--json").stdout) == served


def test_hosts_add_edit_rm(provctl, demo_data, tmp_path):
    added = provctl("hosts", "add", *NEW_HOST, "--protected")
    assert added.stdout == "added host SN-CLI-0001 (cli01.example.com)\n"
    host = json.loads(provctl("hosts", "show", "SN-CLI-0001", "--json").stdout)
    assert host["nics"] == [{"mac": "52:54:00:aa:00:01", "name": None, "primary": True}]
    assert host["variables"] == {"role": "web", "workers": 4} and host["protected"] is True
    assert host["groups"] == ["rack-a1"] and host["bmc"] is None

    document = tmp_path / "host.yaml"
    document.write_text(yaml.safe_dump({"serial": "SN-CLI-0002", "hostname": "cli02.example.com",
                                        "macs": ["52:54:00:aa:00:02"], "profile": "default",
                                        "bmc": {"type": "fake"}}))
    provctl("hosts", "add", "--file", str(document))
    assert json.loads(provctl("hosts", "show", "SN-CLI-0002", "--json").stdout)["bmc"]["type"] == "fake"

    # --set reaches into mappings and keeps the siblings; values are YAML scalars.
    edited = provctl("hosts", "edit", "SN-NEW-0001", "--set", "hardware.cpus=16", "--set", "variables.role=web",
                     "--set", "variables.start=10:30", "--set", "os=")
    assert edited.stdout == "edited host SN-NEW-0001: hardware, os, variables\n"
    host = json.loads(provctl("hosts", "show", "SN-NEW-0001", "--json").stdout)
    assert host["hardware"]["cpus"] == 16 and host["os"] is None
    assert host["variables"] == {"install_disk": "sda", "role": "web", "start": "10:30"}
    provctl("hosts", "edit", "712DM2Y", "--set", "bmc.user=admin")
    assert json.loads(provctl("hosts", "show", "712DM2Y", "--json").stdout)["bmc"] == {
        "type": "fake", "address": "192.168.0.10", "port": None, "user": "admin", "password_set": False}
    patch = tmp_path / "patch.yaml"
    patch.write_text("owner: dba\nhardware: {memory_mib: 131072}\n")
    provctl("hosts", "edit", "712DM2Y", "--file", str(patch), "--set", "protected=true")
    host = json.loads(provctl("hosts", "show", "712DM2Y", "--json").stdout)
    assert host["owner"] == "dba" and host["protected"] is True
    assert host["hardware"]["memory_mib"] == 131072 and host["hardware"]["cpus"] == 16  # merged
    assert provctl("hosts", "edit", "712DM2Y", status=ExitStatus.USAGE).stderr.endswith(
        "nothing to change: give --set FIELD=VALUE, --file, --bmc-password or --bmc-password-stdin\n")

    # rm asks first; a protected host needs --force.
    provctl("hosts", "rm", "SN-CLI-0001", input="n\n", status=ExitStatus.ERROR)
    refused = provctl("hosts", "rm", "SN-CLI-0001", "--yes", status=ExitStatus.CONFLICT)
    assert refused.stderr == "provctl: host SN-CLI-0001 is protected; delete it with force=true if you mean it\n"
    provctl("hosts", "show", "SN-CLI-0001")
    assert provctl("hosts", "rm", "SN-CLI-0001", "--force", input="y\n").stdout.endswith("deleted host SN-CLI-0001\n")
    provctl("hosts", "rm", "SN-CLI-0002", "--yes")
    provctl("hosts", "show", "SN-CLI-0001", status=ExitStatus.NOT_FOUND)
    assert [h["serial"] for h in hosts_json(provctl)["hosts"]] == DEMO_SERIALS


def test_export_csv_then_import_gives_back_the_same_data(provctl, demo_data, tmp_path):
    before = hosts_json(provctl)
    exported = tmp_path / "hosts.csv"
    provctl("hosts", "export", "--format", "csv", "-o", str(exported))
    for serial in DEMO_SERIALS:
        provctl("hosts", "rm", serial, "--yes")
    assert hosts_json(provctl) == {"hosts": []}

    imported = provctl("hosts", "import", str(exported))
    assert imported.stdout == "imported hosts.csv: 3 created, 0 updated, 0 group(s)\n"
    assert hosts_json(provctl) == before
    assert provctl("hosts", "export", "--format", "csv").stdout == exported.read_text()

    # YAML carries the groups too; importing it again updates in place.
    as_yaml = tmp_path / "hosts.yaml"
    provctl("hosts", "export", "-o", str(as_yaml))
    assert set(yaml.safe_load(as_yaml.read_text())) == {"groups", "hosts"}
    again = json.loads(provctl("hosts", "import", str(as_yaml), "--json").stdout)
    assert again == {"created": 0, "updated": 3, "groups": 2}
    assert hosts_json(provctl) == before
    assert json.loads(provctl("hosts", "export", "--json").stdout) == yaml.safe_load(as_yaml.read_text())


def test_bmc_password_goes_in_by_stdin_and_never_comes_out(provctl, demo_data, services):
    secret = "S3cret-bmc-pw!"
    provctl.run("hosts", "add", *NEW_HOST, "--bmc-type", "ipmi", "--bmc-address", "192.168.0.50",
                "--bmc-user", "admin", "--bmc-password-stdin", input=secret + "\n")
    host = json.loads(provctl("hosts", "show", "SN-CLI-0001", "--json").stdout)
    assert host["bmc"] == {"type": "ipmi", "address": "192.168.0.50", "port": None, "user": "admin",
                           "password_set": True}
    assert _stored_password(services, "SN-CLI-0001") == secret

    asked = provctl("hosts", "edit", "SN-CLI-0001", "--bmc-password", input="third-secret\nthird-secret\n")
    assert _stored_password(services, "SN-CLI-0001") == "third-secret"
    assert "third-secret" not in asked.stdout + asked.stderr  # the prompt does not echo it
    provctl("hosts", "edit", "SN-CLI-0001", "--bmc-password-stdin", input="second-secret\n")
    assert _stored_password(services, "SN-CLI-0001") == "second-secret"
    refused = provctl("hosts", "edit", "SN-CLI-0001", "--set", "bmc.password=on-the-line", status=ExitStatus.USAGE)
    assert "never goes on the command line" in refused.stderr
    assert _stored_password(services, "SN-CLI-0001") == "second-secret"
    for args in (["hosts", "show", "SN-CLI-0001"], ["hosts", "show", "SN-CLI-0001", "--json"],
                 ["hosts", "list", "--json"], ["hosts", "export"], ["hosts", "export", "--json"],
                 ["hosts", "export", "--format", "csv"], ["profiles", "render", "SN-CLI-0001", "--json"]):
        out = provctl(*args)
        assert secret not in out.stdout + out.stderr and "second-secret" not in out.stdout + out.stderr, args
    provctl("hosts", "add", "--serial", "X", "--bmc-password-stdin", input="", status=ExitStatus.USAGE)


def _stored_password(services, serial: str) -> str:
    from sqlalchemy import select

    from provisiond import models

    with services.db.read() as session:
        token = session.scalar(select(models.Host.bmc_secret).where(models.Host.serial == serial))
    return services.vault.decrypt(token)


# --------------------------------------------------------------------------- errors


def test_every_error_has_its_exit_status_and_changes_nothing(provctl, demo_data, tmp_path):
    before = hosts_json(provctl)

    missing = provctl("hosts", "show", "NOPE", status=ExitStatus.NOT_FOUND)
    assert missing.stderr == "provctl: no host with serial number 'NOPE'\n" and missing.stdout == ""
    provctl("hosts", "rm", "NOPE", "--yes", status=ExitStatus.NOT_FOUND)
    provctl("hosts", "edit", "NOPE", "--set", "owner=x", status=ExitStatus.NOT_FOUND)
    provctl("profiles", "render", "NOPE", status=ExitStatus.NOT_FOUND)
    provctl("profiles", "show", "nope", status=ExitStatus.NOT_FOUND)
    provctl("groups", "show", "nope", status=ExitStatus.NOT_FOUND)

    duplicate = provctl("hosts", "add", "--serial", "SN-DUP", "--hostname", "dup.example.com",
                        "--mac", "52:54:00:00:00:01", "--profile", "default", status=ExitStatus.CONFLICT)
    assert duplicate.stderr == "provctl: nics: MAC 52:54:00:00:00:01 already belongs to host SN-WEB-0001\n"
    provctl("hosts", "edit", "SN-NEW-0001", "--set", "hostname=web01.example.com", status=ExitStatus.CONFLICT)
    provctl("groups", "rm", "site-hz1", status=ExitStatus.CONFLICT)

    bad_mac = provctl("hosts", "add", "--serial", "SN-BAD", "--hostname", "bad.example.com",
                      "--mac", "zz:54:00:00:00:01", "--profile", "default", status=ExitStatus.INVALID)
    assert bad_mac.stderr.startswith("provctl: nics[0].mac: 'zz:54:00:00:00:01' is not a MAC address")
    bad_cpus = provctl("hosts", "edit", "712DM2Y", "--set", "hardware.cpus=0", status=ExitStatus.INVALID)
    assert "hardware.cpus" in bad_cpus.stderr
    provctl("hosts", "add", "--serial", "SN-BAD", "--hostname", "bad.example.com", "--mac", "52:54:00:00:00:99",
            "--profile", "no_such_profile", status=ExitStatus.INVALID)
    provctl("profiles", "render", "SN-WEB-0001", "--var", "1bad=x", status=ExitStatus.INVALID)

    # An import with one bad row writes nothing, and names file, line and field.
    exported = provctl("hosts", "export", "--format", "csv").stdout.splitlines()
    rows = [exported[0], exported[1].replace("db01.example.com", "db99.example.com"),
            exported[2].replace("52:54:00:00:00:02", "52:54:00:00:00:zz")]
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text("\n".join(rows) + "\n")
    failed = provctl("hosts", "import", str(bad_file), status=ExitStatus.INVALID)
    assert failed.stderr.startswith("provctl: bad.csv:3: nics[0].mac: '52:54:00:00:00:zz' is not a MAC address")

    denied = provctl("hosts", "list", env={"PROVISIOND_TOKEN": "pvd_not_a_token"}, status=ExitStatus.UNAUTHORIZED)
    assert denied.stderr == ("provctl: the bearer token is not valid (unknown, revoked or expired) "
                             "(create one on the server with `provisiond tokens create NAME`)\n")
    provctl("hosts", "rm", "SN-WEB-0001", "--yes", env={"PROVISIOND_TOKEN": "x"}, status=ExitStatus.UNAUTHORIZED)
    kept = tmp_path / "kept.csv"
    kept.write_text("keep\n")
    provctl("hosts", "export", "-o", str(kept), env={"PROVISIOND_TOKEN": "x"}, status=ExitStatus.UNAUTHORIZED)
    assert kept.read_text() == "keep\n"  # a failed export leaves the file alone

    assert hosts_json(provctl) == before


def test_exit_statuses_of_a_real_process(provctl, demo_data, closed_url):
    """The console entry point itself: statuses, stderr, no traceback."""
    assert "712DM2Y" in provctl.run("hosts", "list").stdout
    assert provctl.run("hosts", "show", "NOPE", status=3).stderr == "provctl: no host with serial number 'NOPE'\n"
    provctl.run("hosts", "add", "--serial", "S", "--hostname", "s.example.com", "--mac", "52:54:00:00:00:01",
                "--profile", "default", status=4)
    assert "nics[0].mac" in provctl.run("hosts", "add", "--serial", "S", "--hostname", "s.example.com",
                                        "--mac", "nope", "--profile", "default", status=5).stderr
    provctl.run("hosts", "list", env={"PROVISIOND_TOKEN": "bad"}, status=6)
    provctl.run("hosts", "list", env={"PROVISIOND_URL": closed_url}, status=7)
    provctl.run("hosts", "list", "--no-such-option", status=2)


# --------------------------------------------------------------------------- groups, profiles


def test_groups(provctl, demo_data):
    rows = table(provctl("groups", "list").stdout)
    assert rows["NAME"] == ["NAME", "PRIORITY", "HOSTS", "DESCRIPTION"]
    assert rows["site-hz1"][:3] == ["site-hz1", "0", "3"] and rows["rack-a1"][:3] == ["rack-a1", "10", "2"]
    assert yaml.safe_load(provctl("groups", "show", "rack-a1").stdout)["variables"] == {"ntp_server": "10.1.0.1"}

    provctl("groups", "add", "web", "--priority", "5", "--description", "web tier",
            "--var", "role=web", "--var", "workers=4")
    provctl("groups", "add", "web", status=ExitStatus.CONFLICT)
    provctl("groups", "edit", "web", "--var", "workers=8", "--unset-var", "role", "--description", "front")
    group = json.loads(provctl("groups", "show", "web", "--json").stdout)
    assert group == {"name": "web", "description": "front", "priority": 5, "variables": {"workers": 8},
                     "install_cap": None, "hosts": 0}
    provctl("groups", "edit", "web", "--unset-var", "nope", status=ExitStatus.USAGE)
    provctl("groups", "edit", "web", "--priority", "5000", status=ExitStatus.INVALID)
    assert provctl("groups", "rm", "web").stdout == "deleted group web\n"
    assert "web" not in table(provctl("groups", "list").stdout)


def test_profiles_and_render_passes_ksvalidator(provctl, demo_data, tmp_path):
    rows = table(provctl("profiles", "list").stdout)
    assert sorted(rows) == ["NAME", "default", "mysql_server", "web_server"]
    assert rows["web_server"][:3] == ["web_server", "default", "rocky-9"]
    profile = yaml.safe_load(provctl("profiles", "show", "web_server").stdout)
    assert profile["extends"] == "default" and profile["ks_version"] == "RHEL9"

    rendered = provctl("profiles", "render", "SN-WEB-0001").stdout
    served = requests.get(f"{provctl.url}/api/v1/hosts/SN-WEB-0001/kickstart",
                          headers={"Authorization": f"Bearer {provctl.token}"})
    assert rendered.encode() == served.content  # exactly as served
    path = tmp_path / "SN-WEB-0001.ks"
    path.write_text(rendered)
    check = subprocess.run([str(KSVALIDATOR), "-v", "RHEL9", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    assert "selinux --permissive" in provctl("profiles", "render", "SN-WEB-0001", "--var", "selinux=permissive").stdout
    layered = yaml.safe_load(provctl("profiles", "render", "712DM2Y", "--variables", "--var", "x=1").stdout)
    assert layered["ntp_server"] == "10.1.0.1" and layered["x"] == "1"  # rack (10) beats site (0)
    both = json.loads(provctl("profiles", "render", "712DM2Y", "--json").stdout)
    assert both["serial"] == "712DM2Y" and both["profile"] == "mysql_server"
    assert both["kickstart"] == provctl("profiles", "render", "712DM2Y").stdout


def test_every_command_prints_json_with_json(provctl, demo_data, tmp_path):
    exported = tmp_path / "hosts.yaml"
    exported.write_text(provctl("hosts", "export").stdout)
    commands = [
        ["hosts", "list"], ["hosts", "show", "712DM2Y"], ["hosts", "add", *NEW_HOST],
        ["hosts", "edit", "SN-CLI-0001", "--set", "owner=web"], ["hosts", "rm", "SN-CLI-0001", "--yes"],
        ["hosts", "import", str(exported)], ["hosts", "export"],
        ["groups", "list"], ["groups", "add", "g1"], ["groups", "show", "g1"],
        ["groups", "edit", "g1", "--priority", "3"], ["groups", "rm", "g1"],
        ["profiles", "list"], ["profiles", "show", "default"], ["profiles", "render", "SN-NEW-0001"],
    ]
    for command in commands:
        assert isinstance(json.loads(provctl(*command, "--json").stdout), dict), command


# --------------------------------------------------------------------------- where provctl connects


def test_option_beats_environment_beats_config_file(live_server, admin_token, home, closed_url, tmp_path):
    from tests.cli.conftest import Provctl

    config = home / ".config" / "provisiond" / "provctl.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"url": live_server.url, "token": admin_token}))
    provctl = Provctl(url=None, token=None, home=home)

    assert "SERIAL" in provctl("hosts", "list").stdout  # the default config file alone
    provctl("hosts", "list", env={"PROVISIOND_URL": closed_url}, status=ExitStatus.UNREACHABLE)
    provctl("--url", live_server.url, "hosts", "list", env={"PROVISIOND_URL": closed_url})
    provctl("hosts", "list", env={"PROVISIOND_TOKEN": "bad"}, status=ExitStatus.UNAUTHORIZED)
    provctl("--token", admin_token, "hosts", "list", env={"PROVISIOND_TOKEN": "bad"})

    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"url": closed_url, "token": admin_token}))
    provctl("--config", str(other), "hosts", "list", status=ExitStatus.UNREACHABLE)
    provctl("hosts", "list", env={"PROVCTL_CONFIG": str(other)}, status=ExitStatus.UNREACHABLE)
    provctl("--config", str(other), "--url", live_server.url, "hosts", "list")


def test_provctl_and_the_api_mean_the_same_edit(provctl, client, auth, demo_data):
    """provctl --set sends the same merge patch the API takes: the two
    paths give the same host."""
    def host(serial):
        return client.get(f"/api/v1/hosts/{serial}", headers=auth).get_json()

    client.patch("/api/v1/hosts/SN-WEB-0001", json={"variables": {"keep": 1}}, headers=auth)
    client.patch("/api/v1/hosts/712DM2Y", json={"variables": {"keep": 1}}, headers=auth)
    provctl("hosts", "edit", "712DM2Y", "--set", "variables.role=cache", "--set", "variables.keep=", "--set",
            "hardware.cpus=8")
    client.patch("/api/v1/hosts/SN-WEB-0001", json={"variables": {"role": "cache", "keep": None},
                                                    "hardware": {"cpus": 8}}, headers=auth)
    by_cli, by_api = host("712DM2Y"), host("SN-WEB-0001")
    assert by_cli["variables"] == {"role": "cache"} == by_api["variables"]
    assert by_cli["hardware"]["cpus"] == 8 == by_api["hardware"]["cpus"]


def test_profiles_check_lists_hosts_whose_kickstart_does_not_render(provctl, demo_data, services):
    """For data older than the write checks (planted here) and profiles
    edited on disk: exit 11 and one line per failing host."""
    from sqlalchemy import update

    from provisiond import models

    assert provctl("profiles", "check").stdout.endswith("3 of 3 host(s) render; 0 profile problem(s)\n")
    with services.db.write() as session:
        session.execute(update(models.Host).where(models.Host.serial == "SN-WEB-0001")
                        .values(variables={"root_password_hash": "changeme"}))
    out = provctl("profiles", "check", status=ExitStatus.CHECK_FAILED)
    assert out.stdout.startswith("SN-WEB-0001\tprofile web_server (fragment rootpw line 1): ")
    assert "2 of 3 host(s) render" in out.stderr
    body = json.loads(provctl("profiles", "check", "--json", status=ExitStatus.CHECK_FAILED).stdout)
    assert body["ok"] is False and [f["serial"] for f in body["failures"]] == ["SN-WEB-0001"]


def test_provctl_starts_without_the_database_layer():
    """provctl is an HTTP client: importing SQLAlchemy (via provisiond.events)
    cost it ~0.45 s on every command; `provctl run`'s start is in its timing."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys, provisiond.cli.provctl; "
                           "print(sorted(m for m in ('sqlalchemy', 'flask', 'jinja2') if m in sys.modules))"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
