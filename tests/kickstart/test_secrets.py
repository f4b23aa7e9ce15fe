"""Secret variables (``secret T`` in a profile's variable_types): masked in
every answer that shows variables and in the kickstart preview, never quoted
in an error, kept as stored when a masked value is written back; the
installer's kickstart carries the real value."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from provisiond.kickstart.secrets import MASK
from provisiond.services import Services
from provisiond.web.app import build_app
from tests.conftest import install_token

SECRET = "s3cr3t-Pa55word"
SN = "SN-VAULT-01"


@pytest.fixture
def vault_site(tmp_path, settings):
    """A site profile ``vault`` (extends default) whose fragment uses the
    secret ``db_password``; a host on it and a group carrying the secret."""
    profiles, fragments = tmp_path / "site-profiles", tmp_path / "site-fragments"
    profiles.mkdir()
    fragments.mkdir()
    (profiles / "vault.yaml").write_text(
        "name: vault\nextends: default\nfragments: [header, rootpw, network, partition, packages, pre-report, "
        "post-db, post-done, onerror]\nvariable_types:\n  db_password: secret word\n  db_user: word\n"
        "variables: {db_user: app}\n")
    (fragments / "post-db.j2").write_text(
        "%post\necho {{ (db_user ~ ':' ~ db_password) | sh_quote }} > /root/db.conf\n%end\n")
    services = Services.build(replace(settings, profiles_dir=(profiles,), fragments_dir=(fragments,)))
    client = build_app(services=services).test_client()
    yield services, client
    services.db.dispose()


@pytest.fixture
def host(vault_site, auth):
    services, client = vault_site
    body = {"serial": SN, "hostname": "db-01", "profile": "vault", "nics": [{"mac": "52:54:00:aa:00:01"}],
            "variables": {"db_password": SECRET}}
    created = client.post("/api/v1/hosts", json=body, headers=auth)
    assert created.status_code == 201, created.get_json()
    return created.get_json()


def test_answers_mask_the_secret(vault_site, auth, host):
    _services, client = vault_site
    assert host["variables"] == {"db_password": MASK}
    for url in (f"/api/v1/hosts/{SN}", "/api/v1/hosts", f"/api/v1/hosts/{SN}/variables", f"/api/v1/hosts/{SN}/kickstart",
                "/api/v1/export/hosts?format=yaml", "/api/v1/export/hosts?format=csv"):
        answer = client.get(url, headers=auth)
        assert answer.status_code == 200, (url, answer.get_data(as_text=True))
        assert SECRET not in answer.get_data(as_text=True), url
    assert client.get(f"/api/v1/hosts/{SN}/variables", headers=auth).get_json()["variables"]["db_password"] == MASK
    assert "app:********" in client.get(f"/api/v1/hosts/{SN}/kickstart", headers=auth).get_data(as_text=True)


def test_the_installer_gets_the_real_value(vault_site, auth, host):
    services, client = vault_site
    assert client.post(f"/api/v1/hosts/{SN}/install", json={}, headers=auth).status_code == 201
    kickstart = client.get(f"/install/{install_token(services, SN)}/ks").get_data(as_text=True)
    assert f"app:{SECRET}" in kickstart


def test_a_group_secret_is_masked_too(vault_site, auth):
    _services, client = vault_site
    made = client.post("/api/v1/groups", json={"name": "dbs", "variables": {"db_password": SECRET}},
                       headers=auth)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["variables"] == {"db_password": MASK}
    for url in ("/api/v1/groups", "/api/v1/groups/dbs"):
        assert SECRET not in client.get(url, headers=auth).get_data(as_text=True)


def test_writing_the_mask_back_keeps_the_stored_value(vault_site, auth, host):
    services, client = vault_site
    shown = client.get(f"/api/v1/hosts/{SN}", headers=auth).get_json()
    document = {k: shown[k] for k in ("hostname", "profile", "nics", "variables")}
    assert client.put(f"/api/v1/hosts/{SN}", json=document, headers=auth).status_code == 200
    assert client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"db_password": MASK}},
                        headers=auth).status_code == 200
    exported = client.get("/api/v1/export/hosts?format=yaml", headers=auth).get_data()
    assert client.post("/api/v1/import/hosts?filename=again.yaml", data=exported,
                       headers={**auth, "Content-Type": "application/yaml"}).status_code == 200
    with services.db.read() as session:
        from provisiond.inventory import hosts as host_store

        assert host_store.load_record(session, SN).variables["db_password"] == SECRET
    assert yaml.safe_load(exported)["hosts"][0]["variables"] == {"db_password": MASK}


def test_a_refused_secret_is_not_quoted(vault_site, auth, host):
    _services, client = vault_site
    refused = client.patch(f"/api/v1/hosts/{SN}", json={"variables": {"db_password": "has space SECRET2"}},
                           headers=auth)
    assert refused.status_code == 400
    text = refused.get_data(as_text=True)
    assert "SECRET2" not in text and "the value is secret and not shown" in text, text


def test_a_secret_declaration_must_be_well_formed(tmp_path):
    from provisiond.config import SHIPPED_PROFILES
    from provisiond.errors import ProfileError
    from provisiond.kickstart.profiles import ProfileStore

    (tmp_path / "bad.yaml").write_text("name: bad\nextends: default\nvariable_types:\n"
                                       "  x: {secret: yes-please, type: word}\n")
    with pytest.raises(ProfileError, match=r"a secret is declared 'secret T'"):
        ProfileStore([tmp_path, SHIPPED_PROFILES]).get("bad")
    (tmp_path / "bad.yaml").write_text("name: bad\nextends: default\nvariable_types:\n"
                                       "  x: {secret: true, type: {list: word}}\n  y: secret nonsense\n")
    with pytest.raises(ProfileError, match=r"variable_types.y: unknown type 'nonsense'"):
        ProfileStore([tmp_path, SHIPPED_PROFILES]).get("bad")
