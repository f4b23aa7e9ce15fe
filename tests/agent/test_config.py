"""The agent's configuration file: checked key by key, with errors that
name the key; the pinned CA; the ticket removed after enrollment."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from provisiond.agent import config
from provisiond.agent.config import AgentConfig, ConfigError
from tests.agent.conftest import Pki, make_pki


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def minimal(**extra: Any) -> dict[str, Any]:
    return {"server_url": "https://prov.example:8443", "ca_file": "/etc/provisiond-agent/ca.pem", **extra}


def test_defaults(tmp_path: Path):
    loaded = config.load(write(tmp_path / "agent.json", minimal()))
    assert loaded == AgentConfig(path=tmp_path / "agent.json", server_url="https://prov.example:8443",
                                 ca_file=Path("/etc/provisiond-agent/ca.pem"), ca_fingerprint=None, ticket=None,
                                 state_dir=Path("/var/lib/provisiond-agent"), poll_wait=25, log_level="INFO")


def test_every_key(tmp_path: Path):
    loaded = config.load(write(tmp_path / "agent.json", minimal(
        server_url="https://10.0.0.1:8443/", ca_fingerprint="AB:" * 31 + "AB", ticket="t-123",
        state_dir="/srv/agent", poll_wait=0, log_level="debug", future_key=1)))
    assert loaded.server_url == "https://10.0.0.1:8443"  # no trailing slash: paths are appended
    assert loaded.ca_fingerprint == "ab" * 32
    assert loaded.ticket == "t-123" and loaded.state_dir == Path("/srv/agent")
    assert loaded.poll_wait == 0 and loaded.log_level == "DEBUG"


def test_the_ticket_is_not_in_the_repr(tmp_path: Path):
    loaded = config.load(write(tmp_path / "agent.json", minimal(ticket="s3cret-ticket")))
    assert "s3cret-ticket" not in repr(loaded)


def test_null_means_the_default(tmp_path: Path):
    loaded = config.load(write(tmp_path / "agent.json", minimal(state_dir=None, poll_wait=None, ticket=None,
                                                                 ca_fingerprint=None, log_level=None)))
    assert loaded.state_dir == Path("/var/lib/provisiond-agent") and loaded.poll_wait == 25


@pytest.mark.parametrize(("data", "key"), [
    ({"ca_file": "/ca.pem"}, "server_url"),
    (minimal(server_url="http://prov.example:8080"), "server_url"),
    (minimal(server_url="https://"), "server_url"),
    (minimal(server_url="https://prov.example:99999"), "server_url"),
    (minimal(server_url="https://u:p@prov.example"), "server_url"),
    (minimal(server_url=42), "server_url"),
    ({"server_url": "https://prov.example"}, "ca_file"),
    (minimal(ca_file="ca.pem"), "ca_file"),
    (minimal(ca_fingerprint="abcd"), "ca_fingerprint"),
    (minimal(ca_fingerprint="zz" * 32), "ca_fingerprint"),
    (minimal(ticket=12), "ticket"),
    (minimal(state_dir="relative/dir"), "state_dir"),
    (minimal(poll_wait=61), "poll_wait"),
    (minimal(poll_wait=-1), "poll_wait"),
    (minimal(poll_wait=True), "poll_wait"),
    (minimal(poll_wait="25"), "poll_wait"),
    (minimal(log_level="LOUD"), "log_level"),
])
def test_bad_values_name_their_key(tmp_path: Path, data: dict[str, Any], key: str):
    with pytest.raises(ConfigError, match=key):
        config.load(write(tmp_path / "agent.json", data))


def test_not_a_file_not_json_not_an_object(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        config.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="JSON object"):
        config.load(write(tmp_path / "list.json", [1]))


def test_where_the_configuration_is():
    assert config.config_path("/a.json", {config.ENV_VAR: "/b.json"}) == Path("/a.json")
    assert config.config_path(None, {config.ENV_VAR: "/b.json"}) == Path("/b.json")
    assert config.config_path(None, {}) == Path("/etc/provisiond-agent/agent.json")


# ---------------------------------------------------------------- the pinned CA


def pinned(tmp_path: Path, pki: Pki, fingerprint: str | None) -> AgentConfig:
    return config.load(write(tmp_path / "agent.json", minimal(ca_file=str(pki.ca_pem), ca_fingerprint=fingerprint)))


def test_the_ca_file_matches_its_fingerprint(tmp_path: Path, pki: Pki):
    config.check_ca(pinned(tmp_path, pki, pki.ca_fingerprint))
    config.check_ca(pinned(tmp_path, pki, pki.ca_fingerprint.upper()))
    config.check_ca(pinned(tmp_path, pki, None))  # no pin: any readable CA file


def test_another_ca_is_refused(tmp_path: Path, pki: Pki):
    other = make_pki(tmp_path / "other")
    with pytest.raises(ConfigError, match="refusing to trust it"):
        config.check_ca(pinned(tmp_path, pki, other.ca_fingerprint))


def test_a_second_certificate_beside_the_pinned_one_is_refused(tmp_path: Path, pki: Pki):
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki.ca_pem.read_bytes() + make_pki(tmp_path / "other").ca_pem.read_bytes())
    loaded = config.load(write(tmp_path / "agent.json", minimal(ca_file=str(bundle),
                                                                 ca_fingerprint=pki.ca_fingerprint)))
    with pytest.raises(ConfigError, match="2 certificates"):
        config.check_ca(loaded)


def test_a_missing_or_empty_ca_file_is_refused(tmp_path: Path):
    for content in (None, "not a certificate"):
        ca = tmp_path / "ca.pem"
        if content is not None:
            ca.write_text(content)
        loaded = config.load(write(tmp_path / "agent.json", minimal(ca_file=str(ca))))
        with pytest.raises(ConfigError, match="ca_file"):
            config.check_ca(loaded)


# ---------------------------------------------------------------- after enrollment


def test_drop_ticket_rewrites_the_file_atomically_keeping_the_rest(tmp_path: Path):
    path = write(tmp_path / "agent.json", minimal(ticket="one-time", poll_wait=10, extra="kept"))
    os.chmod(path, 0o600)
    before = path.stat().st_ino
    config.drop_ticket(path)
    data = json.loads(path.read_text())
    assert "ticket" not in data and data["poll_wait"] == 10 and data["extra"] == "kept"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_ino != before  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["agent.json"]  # no temporary file left
    config.drop_ticket(path)  # no ticket: nothing to do
    assert config.load(path).ticket is None
