"""Every shipped profile, rendered for the sample hosts, passes ksvalidator
(pykickstart, the parser Anaconda uses) for its RHEL version and matches the
checked-in golden file. Rewrite the goldens with ``pytest --update-golden``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from provisiond.config import SHIPPED_PROFILES
from provisiond.kickstart.profiles import ProfileStore

GOLDEN = Path(__file__).parent / "golden"
AGENT_SHA256 = re.compile(r"(?<=echo ')[0-9a-f]{64}(?=  /usr/local/bin/provisiond-agent)")
KSVALIDATOR = Path(sys.executable).parent / "ksvalidator"
SAMPLE_HOSTS = {"712DM2Y": "mysql_server", "SN-WEB-0001": "web_server", "SN-NEW-0001": "default"}


def ksvalidate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    assert KSVALIDATOR.exists(), f"ksvalidator not installed next to {sys.executable} (pip install pykickstart)"
    return subprocess.run([str(KSVALIDATOR), "-e", "-v", version, str(path)], capture_output=True, text=True)


def test_every_shipped_profile_has_a_sample_host():
    assert set(SAMPLE_HOSTS.values()) == set(ProfileStore(SHIPPED_PROFILES).names())


@pytest.mark.parametrize("serial", sorted(SAMPLE_HOSTS))
def test_rendered_kickstart_is_valid_and_golden(client, auth, demo_data, tmp_path, update_golden, serial):
    response = client.get(f"/api/v1/hosts/{serial}/kickstart", headers=auth)
    assert response.status_code == 200, response.get_json()
    text = response.get_data(as_text=True)
    assert "{{" not in text and "{%" not in text

    rendered = tmp_path / f"{serial}.ks"
    rendered.write_text(text)
    profile = ProfileStore(SHIPPED_PROFILES).get(SAMPLE_HOSTS[serial])
    result = ksvalidate(rendered, profile.ks_version)
    assert result.returncode == 0, result.stdout + result.stderr

    golden = GOLDEN / f"{SAMPLE_HOSTS[serial]}-{serial}.ks"
    # The agent program's checksum changes with its code, not with the profile.
    text = AGENT_SHA256.sub("<agent sha256>", text, count=1)
    if update_golden:
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden"
    assert text == golden.read_text()


def test_ksvalidator_catches_a_broken_kickstart(tmp_path):
    """The check above can fail: a bad command is refused."""
    bad = tmp_path / "bad.ks"
    bad.write_text("rootpw --iscrypted\nnetwork --bootproto=sideways\n")
    assert ksvalidate(bad, "RHEL9").returncode != 0
