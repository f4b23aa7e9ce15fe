"""Settings: defaults → YAML file → PROVISIOND_* environment; bad values name the key."""

from pathlib import Path

import pytest

import provisiond
from provisiond.config import SHIPPED_BOOT_TEMPLATES, SHIPPED_FRAGMENTS, SHIPPED_PROFILES, load_settings
from provisiond.errors import ConfigError


def test_defaults_are_the_shipped_data_and_an_absolute_state_directory(tmp_path: Path):
    settings = load_settings(environ={"STATE_DIRECTORY": str(tmp_path / "state")})
    assert settings.profile_dirs == (SHIPPED_PROFILES,)
    assert settings.fragment_dirs == (SHIPPED_FRAGMENTS,)
    assert settings.boot_templates_dir == SHIPPED_BOOT_TEMPLATES
    assert SHIPPED_PROFILES.is_relative_to(Path(provisiond.__file__).parent)  # in the package, not the checkout
    assert settings.data_dir == tmp_path / "state"
    assert settings.pxelinux_dir == tmp_path / "state" / "tftp"
    assert settings.hooks_dir == tmp_path / "state" / "hooks"
    assert settings.secret_key_file == tmp_path / "state" / "secret.key"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'state' / 'provisiond.db'}"


@pytest.mark.parametrize(("environ", "root", "expected"), [
    ({"STATE_DIRECTORY": "/var/lib/provisiond:/other"}, False, "/var/lib/provisiond"),  # systemd's first
    ({}, True, "/var/lib/provisiond"),
    ({"XDG_STATE_HOME": "/home/op/.state", "HOME": "/home/op"}, False, "/home/op/.state/provisiond"),
    ({"HOME": "/home/op"}, False, "/home/op/.local/state/provisiond"),
])
def test_data_dir_default_does_not_depend_on_the_working_directory(environ, root, expected, monkeypatch, tmp_path):
    monkeypatch.setattr("os.geteuid", lambda: 0 if root else 1000)
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ=environ).data_dir == Path(expected)


def test_paths_set_on_their_own_do_not_follow_data_dir(tmp_path: Path):
    settings = load_settings(environ={"PROVISIOND_DATA_DIR": str(tmp_path / "d"),
                                      "PROVISIOND_PXELINUX_DIR": str(tmp_path / "tftp")})
    assert settings.pxelinux_dir == tmp_path / "tftp"
    assert settings.hooks_dir == tmp_path / "d" / "hooks"


def test_layers_file_then_environment(tmp_path: Path):
    config = tmp_path / "provisiond.yaml"
    config.write_text("http_port: 9000\nhttp_workers: 3\nlog_level: debug\nvariables: {timezone: UTC}\n")
    settings = load_settings(config, environ={"PROVISIOND_HTTP_PORT": "9100"})
    assert settings.http_port == 9100  # the environment wins over the file
    assert settings.http_workers == 3
    assert settings.log_level == "DEBUG"
    assert settings.variables == {"timezone": "UTC"}


def test_config_file_named_by_environment(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text(f"data_dir: {tmp_path / 'd'}\n")
    settings = load_settings(environ={"PROVISIOND_CONFIG": str(config)})
    assert settings.data_dir == tmp_path / "d"
    assert settings.secret_key_file == tmp_path / "d" / "secret.key"  # follows data_dir


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"PROVISIOND_HTTP_PORT": "eighty"}, "'http_port' from environment variable PROVISIOND_HTTP_PORT"),
        ({"PROVISIOND_HTTP_PORT": "70000"}, "'http_port'"),
        ({"PROVISIOND_HTTP_WORKERS": "0"}, "'http_workers'"),
        ({"PROVISIOND_LOG_LEVEL": "chatty"}, "'log_level'"),
        ({"PROVISIOND_PUBLIC_URL": "ftp://x"}, "'public_url'"),
        ({"PROVISIOND_DATABASE_URL": "not a url"}, "'database_url'"),
        ({"PROVISIOND_VARIABLES": "[1, 2]"}, "'variables'"),
    ],
)
def test_bad_environment_value_names_the_key(environ, needle):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("http_prot: 80\n", "unknown setting 'http_prot'"),
        ("- a\n- b\n", "must hold a mapping"),
        ("http_port: [80\n", "not valid YAML"),
        ("http_workers: true\n", "'http_workers'"),
        ("profiles_dir: 12\n", "'profiles_dir'"),
    ],
)
def test_bad_config_file_names_the_key(tmp_path: Path, text, needle):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert needle in str(info.value)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "nope.yaml", environ={})


def test_bad_setting_stops_start_up(tmp_path: Path):
    """`provisiond` itself refuses to start and names the key."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "provisiond.cli.server", "db", "upgrade"],
        env={"PATH": "/usr/bin:/bin", "PROVISIOND_HTTP_PORT": "abc", "PROVISIOND_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "http_port" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("environ", "url"), [
    ({}, "http://127.0.0.1:8080"),
    ({"PROVISIOND_HTTP_PORT": "9000"}, "http://127.0.0.1:9000"),
    ({"PROVISIOND_HTTP_HOST": "10.0.0.5", "PROVISIOND_HTTP_PORT": "81"}, "http://10.0.0.5:81"),
    ({"PROVISIOND_HTTP_HOST": "0.0.0.0", "PROVISIOND_NETBOOT_ADDRESS": "10.9.0.1"}, "http://10.9.0.1:8080"),
    ({"PROVISIOND_HTTP_PORT": "9000", "PROVISIOND_PUBLIC_URL": "https://boot.example.com"}, "https://boot.example.com"),
])
def test_public_url_follows_the_listener_unless_set(environ, url):
    assert load_settings(environ=environ).public_url == url


def test_an_override_of_the_port_moves_the_derived_public_url():
    assert load_settings(environ={}, overrides={"http_port": 9100}).public_url == "http://127.0.0.1:9100"


def test_site_directories_come_before_the_shipped_ones(tmp_path: Path):
    site, other = tmp_path / "site", tmp_path / "other"
    settings = load_settings(environ={"PROVISIOND_PROFILES_DIR": f"{site}:{other}",
                                      "PROVISIOND_FRAGMENTS_DIR": str(site)})
    assert settings.profile_dirs == (site, other, SHIPPED_PROFILES)
    assert settings.fragment_dirs == (site, SHIPPED_FRAGMENTS)
    config = tmp_path / "c.yaml"
    config.write_text(f"profiles_dir: [{site}, {SHIPPED_PROFILES}]\n")
    assert load_settings(config, environ={}).profile_dirs == (site, SHIPPED_PROFILES)  # listed once
