"""Settings: defaults → YAML file → PROVISIOND_* environment; bad values name the key."""

from pathlib import Path

import pytest

from provisiond.config import PROJECT_ROOT, load_settings
from provisiond.errors import ConfigError


def test_defaults_point_at_the_repository():
    settings = load_settings(environ={})
    assert settings.profile_dirs == (PROJECT_ROOT / "profiles",)
    assert settings.fragment_dirs == (PROJECT_ROOT / "kickstart_fragments",)
    assert settings.pxelinux_dir == PROJECT_ROOT / "pxelinux"
    assert settings.hooks_dir == PROJECT_ROOT / "hooks"
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.data_dir.is_absolute()


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
    assert settings.profile_dirs == (site, other, PROJECT_ROOT / "profiles")
    assert settings.fragment_dirs == (site, PROJECT_ROOT / "kickstart_fragments")
    config = tmp_path / "c.yaml"
    config.write_text(f"profiles_dir: [{site}, {PROJECT_ROOT / 'profiles'}]\n")
    assert load_settings(config, environ={}).profile_dirs == (site, PROJECT_ROOT / "profiles")  # listed once
