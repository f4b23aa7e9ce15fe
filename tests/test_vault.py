"""BMC secrets: encrypted with a 0600 key created on first start; rotation."""

import os
import subprocess
import sys

import pytest

from provisiond.errors import ConfigError
from provisiond.vault import Vault


def test_key_is_created_private_and_reused(tmp_path):
    key = tmp_path / "d" / "secret.key"
    token = Vault(key).encrypt("pw")
    assert key.stat().st_mode & 0o777 == 0o600
    assert "pw" not in token
    assert Vault(key).decrypt(token) == "pw"


def test_world_readable_key_is_refused(tmp_path):
    key = tmp_path / "secret.key"
    Vault(key)
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Vault(key)


def test_wrong_key_says_so(tmp_path):
    token = Vault(tmp_path / "a.key").encrypt("pw")
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Vault(tmp_path / "b.key").decrypt(token)


def test_rotation_command(tmp_path, client, auth, services, settings):
    client.post("/api/v1/groups", json={"name": "g"}, headers=auth)
    response = client.post("/api/v1/hosts", headers=auth, json={
        "serial": "S1", "hostname": "s1", "macs": ["52:54:00:aa:00:01"], "profile": "default",
        "bmc": {"type": "ipmi", "address": "10.9.9.9", "password": "rotate-me"}})
    assert response.status_code == 201, response.get_json()
    key = settings.secret_key_file
    key.rename(key.with_name("secret.key.old"))
    env = {**os.environ, "PROVISIOND_DATA_DIR": str(settings.data_dir),
           "PROVISIOND_DATABASE_URL": settings.effective_database_url}
    result = subprocess.run([sys.executable, "-m", "provisiond.cli.server", "secrets", "rotate"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "re-encrypted 1" in result.stdout
    key.with_name("secret.key.old").unlink()
    from sqlalchemy import select

    from provisiond import models

    with services.db.read() as session:
        stored = session.scalar(select(models.Host.bmc_secret))
    assert Vault(key).decrypt(stored) == "rotate-me"
