"""Boot plans and the per-MAC entries: only an ARMED host gets an installer."""

import pytest

from provisiond.config import SHIPPED_BOOT_TEMPLATES
from provisiond.inventory.bootplan import BootAction, plan_for_mac
from provisiond.netboot.pxeconfig import EntryRenderer, Loader, grub_path, is_fallback_config_name, mac_from_config_name

MAC = "00:26:b9:35:e9:aa"


def plan(services, mac=MAC, **kwargs):
    with services.db.read() as session:
        return plan_for_mac(session, mac, vault=services.vault, profiles=services.profiles,
                            public_url=services.settings.public_url, **kwargs)


@pytest.fixture
def renderer():
    return EntryRenderer(SHIPPED_BOOT_TEMPLATES)


def test_unknown_mac_is_ignored_or_local_as_configured(services):
    assert plan(services, "52:54:00:99:99:99").action == BootAction.IGNORE
    assert plan(services, "52:54:00:99:99:99", unknown=BootAction.LOCAL).action == BootAction.LOCAL


def test_known_host_not_armed_boots_locally(services, demo_data, renderer):
    result = plan(services)
    assert (result.action, result.serial) == (BootAction.LOCAL, "712DM2Y")
    assert "is idle, not armed" in result.reason
    for loader in Loader:
        text = renderer.render(result, loader)
        assert "inst.ks" not in text
    assert "DEFAULT local" in renderer.render(result, Loader.PXELINUX)
    assert "LOCALBOOT 0" in renderer.render(result, Loader.PXELINUX)
    assert "exit" in renderer.render(result, Loader.IPXE)


def test_armed_host_gets_the_installer_with_its_token(services, demo_data, arm, renderer):
    token = arm("712DM2Y")
    result = plan(services, "00:26:b9:35:e9:ab")  # its second NIC counts too
    assert result.action == BootAction.INSTALL
    assert result.kernel_url == "http://mirror.example.com/rocky/9/BaseOS/x86_64/os/images/pxeboot/vmlinuz"
    assert f"inst.ks=http://provisiond.test:8080/install/{token}/ks" in result.kernel_args
    assert "console=ttyS0,115200n8" in result.kernel_args
    pxe = renderer.render(result, Loader.PXELINUX)
    assert "DEFAULT install" in pxe and f"install/{token}/ks" in pxe
    grub = renderer.render(result, Loader.GRUB)
    assert "linux (http,mirror.example.com)/rocky/9/BaseOS/x86_64/os/images/pxeboot/vmlinuz" in grub
    ipxe = renderer.render(result, Loader.IPXE)
    assert ipxe.startswith("#!ipxe") and "boot" in ipxe


def test_after_the_install_starts_or_ends_the_answer_is_local(services, client, demo_data, arm):
    token = arm("712DM2Y")
    client.get(f"/install/{token}/ks")  # BOOTING: a second PXE boot must not reinstall
    assert plan(services).action == BootAction.LOCAL
    assert plan(services).reason == "host 712DM2Y is booting, not armed"


def test_an_install_past_its_arm_ttl_boots_locally_before_the_reaper_runs(services, client, auth, demo_data, arm):
    """The boot decision checks the deadline itself: between the TTL and
    the reaper's next pass the host gets local boot, never the installer
    (whose kickstart would 404)."""
    import datetime as dt

    from sqlalchemy import update

    from provisiond import models

    arm("712DM2Y")
    assert plan(services).action == BootAction.INSTALL
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=services.settings.arm_ttl_seconds + 1)
    expired = plan(services, now=later)
    assert expired.action == BootAction.LOCAL
    assert "install expired at" in expired.reason and "arm_ttl_seconds" in expired.reason
    with services.db.write() as session:  # the deadline passed, the reaper has not run
        session.execute(update(models.Install).values(
            expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    script = client.get(f"/boot/ipxe/{MAC}").get_data(as_text=True)
    assert "inst.ks" not in script and "exit" in script
    assert client.get("/api/v1/hosts/712DM2Y", headers=auth).get_json()["state"] == "armed"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pxelinux.cfg/01-00-26-b9-35-e9-aa", (Loader.PXELINUX, MAC)),
        ("/pxelinux.cfg/01-00-26-B9-35-E9-AA", (Loader.PXELINUX, MAC)),
        ("grub/grub.cfg-01-00-26-b9-35-e9-aa", (Loader.GRUB, MAC)),
        ("pxelinux.cfg/C0A8000A", None),
        ("pxelinux.cfg/default", None),
        ("pxelinux.cfg/01-00-26-b9-35-e9", None),
        ("pxelinux.0", None),
    ],
)
def test_config_names(name, expected):
    assert mac_from_config_name(name) == expected


def test_fallback_names():
    assert is_fallback_config_name("pxelinux.cfg/default")
    assert is_fallback_config_name("pxelinux.cfg/C0A8")
    assert not is_fallback_config_name("lpxelinux.0")


def test_grub_path():
    assert grub_path("http://10.0.0.1:8080/boot/k") == "(http,10.0.0.1:8080)/boot/k"


def test_ipxe_script_over_http(client, auth, demo_data, arm):
    local = client.get("/boot/ipxe/00-26-B9-35-E9-AA")
    assert local.status_code == 200
    assert "exit" in local.get_data(as_text=True)
    token = arm("712DM2Y")
    script = client.get("/boot/ipxe/00:26:b9:35:e9:aa").get_data(as_text=True)
    assert f"inst.ks=http://provisiond.test:8080/install/{token}/ks" in script
    assert client.get("/boot/ipxe/52:54:00:99:99:99").status_code == 404  # unknown_mac: ignore
    assert client.get("/boot/ipxe/not-a-mac").status_code == 404
    events = client.get("/api/v1/hosts/712DM2Y/events", headers=auth).get_json()["events"]
    assert [e["kind"] for e in events].count("ipxe") == 2
