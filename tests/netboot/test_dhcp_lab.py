"""The DHCP service against real peers, inside network namespaces.

provisiond's DhcpService runs in the lab's server namespace (a subprocess
started with ``ip netns exec``, settings from PROVISIOND_* variables, the
test's own database); the peers are ISC ``dhclient``, ``dnsmasq`` (the site's
existing DHCP server, for proxy mode) and ISC ``perfdhcp`` (acting as a DHCP
relay agent, for relay mode). Nothing here asserts on wall-clock time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from provisiond import models
from provisiond.config import Settings
from provisiond.services import Services
from tests.conftest import require
from tests.netboot import namespace_db
from tests.netboot.conftest import Lab

PUBLIC_URL = "http://10.77.0.1:8080"

#: The service as `provisiond netboot` will run it: settings from the environment.
SERVE = textwrap.dedent("""
    import logging, sys
    from provisiond.config import load_settings
    from provisiond.netboot.dhcp import DhcpService
    from provisiond.services import Services
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    service = DhcpService(Services.build(load_settings()))
    service.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    service.stop()
""")

#: dhclient-script stand-in: records what dhclient learnt, touches nothing.
RECORD = '#!/bin/sh\nenv | sort > "{out}.$reason"\n'


def _needs(*tools: str) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"needs {tool} (Debian packages in .ci/debian-packages)")


def namespace_database_url(url: str) -> str:
    """The database as seen from inside the lab's namespaces (a test skips,
    or fails under CI=true, when a local PostgreSQL cannot be reached there)."""
    try:
        return namespace_db.namespace_database_url(url)
    except LookupError as exc:
        require(False, str(exc))
        raise


class DhcpServer:
    """provisiond's DhcpService in the lab's server namespace."""

    def __init__(self, lab: Lab, settings: Settings, log: Path, mode: str, **env: str) -> None:
        self.log = log
        environment = {
            **os.environ,
            "PROVISIOND_DATA_DIR": str(settings.data_dir),
            "PROVISIOND_DATABASE_URL": namespace_database_url(settings.database_url),
            "PROVISIOND_PUBLIC_URL": PUBLIC_URL,
            "PROVISIOND_DHCP_MODE": mode,
            "PROVISIOND_NETBOOT_ADDRESS": "10.77.0.1",
            "PROVISIOND_NETBOOT_INTERFACE": "br0",
            **{f"PROVISIOND_{key.upper()}": value for key, value in env.items()},
        }
        self.process = subprocess.Popen(
            lab.ns_cmd(lab.server_ns, sys.executable, "-c", SERVE), env=environment, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"),
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.process.wait()
            raise RuntimeError(f"the DHCP service did not start:\n{log.read_text()}")

    def stop(self) -> str:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()
        return self.log.read_text()


@pytest.fixture
def start_dhcp(lab: Lab, settings: Settings, services: Services, tmp_path: Path) -> Iterator[Any]:
    services.vault  # the key file exists before the service reads it
    servers: list[DhcpServer] = []

    def start(mode: str, **env: str) -> DhcpServer:
        server = DhcpServer(lab, settings, tmp_path / f"dhcp-{len(servers)}.log", mode, **env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


def add_host(client: Any, auth: dict[str, str], serial: str, mac: str, **fields: Any) -> None:
    body = {"serial": serial, "hostname": f"{serial.lower()}.lab.test", "profile": "default", "macs": [mac], **fields}
    response = client.post("/api/v1/hosts", json=body, headers=auth)
    assert response.status_code == 201, response.get_json()


def timeline(client: Any, auth: dict[str, str], serial: str, *lines: str, within: float = 10) -> list[str]:
    """The host's DHCP timeline lines, once all of ``lines`` are in it: the
    service writes them in batches (within about 0.1 s), so wait, bounded."""
    deadline = time.monotonic() + within
    while True:
        response = client.get(f"/api/v1/hosts/{serial}/events", headers=auth)
        found = [e["message"] for e in response.get_json()["events"] if e["kind"] == "dhcp"]
        if all(line in found for line in lines) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def dhclient(lab: Lab, ns: str, folder: Path, name: str, *config: str) -> tuple[dict[str, str], str]:
    """One ``dhclient -1`` run: (what it bound, from its script's env; its log).
    The daemon it leaves behind after binding is stopped at once."""
    _needs("dhclient")
    out = folder / name
    script = folder / f"{name}.sh"
    script.write_text(RECORD.format(out=out))
    script.chmod(0o755)
    conf = folder / f"{name}.conf"
    conf.write_text("timeout 12;\n" + "".join(f"{line}\n" for line in config))
    leases, pidfile = folder / f"{name}.leases", folder / f"{name}.pid"
    leases.touch()
    result = lab.run(ns, "dhclient", "-1", "-v", "-cf", str(conf), "-lf", str(leases), "-pf", str(pidfile),
                     "-sf", str(script), "eth0", timeout=120)
    if pidfile.exists() and pidfile.read_text().strip():
        subprocess.run(["kill", pidfile.read_text().strip()], check=False)
    bound = Path(f"{out}.BOUND")
    env = dict(line.split("=", 1) for line in bound.read_text().splitlines() if "=" in line) if bound.exists() else {}
    return env, result.stdout + result.stderr


PXE_BIOS = 'send vendor-class-identifier "PXEClient:Arch:00000:UNDI:002001";'
PXE_UEFI = ('option pxe-arch code 93 = unsigned integer 16;\n'
            'send vendor-class-identifier "PXEClient:Arch:00007:UNDI:003016";\nsend pxe-arch 7;')
IPXE = 'send vendor-class-identifier "PXEClient:Arch:00000:UNDI:002001";\nsend user-class "iPXE";'


# --------------------------------------------------------------------------- full mode


def test_full_mode_dhclient_gets_its_reserved_address_and_boot_file(lab: Lab, start_dhcp: Any, client: Any,
                                                                    auth: dict[str, str], tmp_path: Path) -> None:
    mac = "52:54:00:77:00:10"
    add_host(client, auth, "SN-LAB-10", mac, ip="10.77.0.10", prefix=24, gateway="10.77.0.1", dns=["10.77.0.2"])
    ns = lab.add_client(mac)
    server = start_dhcp("full", dhcp_subnets="[{network: 10.77.0.0/24, pool: 10.77.0.100-10.77.0.110}]")
    expected = {"new_ip_address": "10.77.0.10", "new_subnet_mask": "255.255.255.0", "new_routers": "10.77.0.1",
                "new_domain_name_servers": "10.77.0.2", "new_dhcp_server_identifier": "10.77.0.1",
                "new_next_server": "10.77.0.1", "new_dhcp_lease_time": "3600"}
    for name, config, boot_file in [
        ("bios", PXE_BIOS, "lpxelinux.0"),
        ("uefi", PXE_UEFI, "ipxe.efi"),
        ("ipxe", IPXE, f"{PUBLIC_URL}/boot/ipxe/{mac}"),
    ]:
        env, log = dhclient(lab, ns, tmp_path, name, config)
        assert env, f"{name}: dhclient bound nothing:\n{log}\n{server.log.read_text()}"
        assert {key: env.get(key) for key in expected} == expected, name
        assert env["new_filename"] == boot_file, name
    lines = ["DHCP: offered 10.77.0.10, boot file lpxelinux.0",
             "DHCP: acknowledged 10.77.0.10 for 3600 s, boot file ipxe.efi",
             f"DHCP: acknowledged 10.77.0.10 for 3600 s, boot file {PUBLIC_URL}/boot/ipxe/{mac}"]
    events = timeline(client, auth, "SN-LAB-10", *lines)
    assert all(line in events for line in lines), events
    assert "offered 10.77.0.10" in server.stop()


@pytest.mark.parametrize("unknown", ["local", "ignore"])
def test_full_mode_unknown_mac_gets_a_pool_address_or_nothing(lab: Lab, start_dhcp: Any, services: Services,
                                                              tmp_path: Path, unknown: str) -> None:
    mac = "52:54:00:77:00:99"
    ns = lab.add_client(mac)
    server = start_dhcp("full", unknown_mac=unknown,
                        dhcp_subnets="[{network: 10.77.0.0/24, router: 10.77.0.1, pool: 10.77.0.100-10.77.0.110,"
                                     " lease_seconds: 900}]")
    env, log = dhclient(lab, ns, tmp_path, "unknown", PXE_BIOS)
    text = server.stop()
    if unknown == "ignore":
        assert env == {}, env
        assert "No DHCPOFFERS received" in log
        assert f"from {mac} via br0 port 67: ignored (MAC {mac} is not in the data source)" in text
        return
    assert env, f"dhclient bound nothing:\n{log}\n{text}"
    assert (env["new_ip_address"], env["new_routers"], env["new_filename"], env["new_dhcp_lease_time"]) == \
        ("10.77.0.100", "10.77.0.1", "lpxelinux.0", "900")
    with services.db.read() as session:
        lease = session.execute(select(models.Lease.ip, models.Lease.mac, models.Lease.state)).one()
    assert tuple(lease) == ("10.77.0.100", mac, "bound")


# --------------------------------------------------------------------------- proxy mode


@pytest.fixture
def site_dhcp(lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """dnsmasq as the site's existing DHCP server: its own namespace, 10.77.0.2,
    addresses 10.77.0.100-150. Yields its log."""
    _needs("dnsmasq")
    site = lab.add_client("52:54:00:77:00:02", "10.77.0.2/24")
    log = tmp_path / "dnsmasq.log"
    dnsmasq = subprocess.Popen(lab.ns_cmd(
        site, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface=eth0", "--bind-interfaces",
        "--dhcp-range=10.77.0.100,10.77.0.150,1h", f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
        f"--pid-file={tmp_path / 'dnsmasq.pid'}", "--log-dhcp"), stdout=log.open("w"), stderr=subprocess.STDOUT)
    yield log
    dnsmasq.terminate()
    dnsmasq.wait()


def test_proxy_mode_beside_dnsmasq(lab: Lab, start_dhcp: Any, site_dhcp: Path, client: Any, auth: dict[str, str],
                                   tmp_path: Path) -> None:
    """dnsmasq gives the address; provisiond only sends PXE clients their boot
    information (a proxy offer, yiaddr 0.0.0.0), never an address."""
    mac = "52:54:00:77:00:20"
    add_host(client, auth, "SN-LAB-20", mac)
    server = start_dhcp("proxy")
    ns = lab.add_client(mac)
    # A PXE ROM takes its address from the DHCP server and its boot file from
    # the proxy. dhclient cannot combine two offers (it would REQUEST the
    # proxy's 0.0.0.0), so it rejects provisiond's offer and binds dnsmasq's;
    # test_proxy_mode_real_pxe_firmware shows a real PXE ROM combining them.
    env, log = dhclient(lab, ns, tmp_path, "proxy", PXE_BIOS, "reject 10.77.0.1;")
    text = server.stop()
    assert env, f"dhclient bound nothing:\n{log}\n{text}\n{site_dhcp.read_text()}"
    assert env["new_dhcp_server_identifier"] == "10.77.0.2"
    assert 100 <= int(env["new_ip_address"].rsplit(".", 1)[1]) <= 150
    assert "DHCPOFFER from 10.77.0.1 rejected" in log  # the proxy offer reached the client
    line = "proxyDHCP: boot file lpxelinux.0 from 10.77.0.1 (BIOS, proxy offer)"
    assert line in timeline(client, auth, "SN-LAB-20", line)
    assert "offered" not in text and "acknowledged" not in text  # never an address


#: Answers the first HTTP request, prints "client-address path", and exits.
CAPTURE_HTTP = textwrap.dedent("""
    import http.server, sys
    class One(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"#!ipxe\\nexit\\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            print(self.client_address[0], self.path, flush=True)
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("10.77.0.1", 8080), One).handle_request()
""")


def _gave_up(serial: Path) -> bool:
    return serial.exists() and "No bootable device" in serial.read_text(errors="replace")


def test_proxy_mode_real_pxe_firmware(lab: Lab, start_dhcp: Any, site_dhcp: Path, client: Any,
                                      auth: dict[str, str], tmp_path: Path) -> None:
    """QEMU's iPXE option ROM (real PXE firmware) PXE-boots beside dnsmasq:
    address from dnsmasq, next-server and boot file (iPXE: the HTTP script
    URL) from provisiond's proxy offer, then it fetches that URL."""
    _needs("qemu-system-x86_64")
    require(Path("/usr/lib/ipxe/qemu").is_dir(), "needs ipxe-qemu (QEMU's iPXE option ROMs)")
    mac = "52:54:00:77:00:30"
    add_host(client, auth, "SN-LAB-30", mac)
    server = start_dhcp("proxy")
    http = subprocess.Popen(lab.ns_cmd(lab.server_ns, sys.executable, "-c", CAPTURE_HTTP), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lab.run(lab.server_ns, "ip", "tuntap", "add", "dev", "tap0", "mode", "tap", check=True)
    lab.run(lab.server_ns, "ip", "link", "set", "tap0", "master", "br0", check=True)
    lab.run(lab.server_ns, "ip", "link", "set", "tap0", "up", check=True)
    serial = tmp_path / "serial.log"
    qemu = subprocess.Popen(lab.ns_cmd(
        lab.server_ns, "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-boot", "n", "-no-reboot",
        "-nographic", "-serial", f"file:{serial}", "-monitor", "none", "-display", "none",
        "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={mac}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        # Done when the firmware has fetched its script, or has given up.
        while http.poll() is None and qemu.poll() is None and not _gave_up(serial):
            time.sleep(0.5)
    finally:
        qemu.kill()
        qemu.wait()
        http.kill()
    text = server.stop()
    fetched = http.stdout.read() if http.stdout else ""
    firmware = serial.read_text(errors="replace") if serial.exists() else ""
    url = f"{PUBLIC_URL}/boot/ipxe/{mac}"
    assert "Next server: 10.77.0.1" in firmware, firmware
    assert f"Filename: {url}" in firmware, firmware
    assert fetched, f"the firmware fetched nothing:\n{firmware}\n{text}"
    address, path = fetched.split()
    assert 100 <= int(address.rsplit(".", 1)[1]) <= 150, fetched  # dnsmasq's address
    assert path.replace("%3A", ":") == f"/boot/ipxe/{mac}"  # iPXE percent-encodes the colons
    line = f"proxyDHCP: boot file {url} from 10.77.0.1 (iPXE, proxy offer)"
    assert line in timeline(client, auth, "SN-LAB-30", line)
    assert "offered" not in text and "acknowledged" not in text


# --------------------------------------------------------------------------- relay mode

PERFDHCP_STATS = re.compile(r"\*\*\*Statistics for: (\S+)\*\*\*\s+sent packets: (\d+)\s+received packets: (\d+)\s+"
                            r"drops: (\d+).*?rejected leases: (\d+)\s+non unique addresses: (\d+)", re.S)


def perfdhcp(lab: Lab, ns: str, *args: str) -> dict[str, dict[str, int]]:
    """Run perfdhcp as a relay agent (a unicast server address makes it set
    giaddr to its local address and use port 67); its exchange counts."""
    _needs("perfdhcp")
    # -W: after the last request, wait 1 s for the answers still on their way.
    result = lab.run(ns, "perfdhcp", "-4", "-l", "10.88.0.1", "-W", "1000000", *args, "10.77.0.1", timeout=300)
    # perfdhcp exits 3 when some exchanges were dropped: the counts say how many.
    assert result.returncode in (0, 3), result.stdout + result.stderr
    stats = {m[0]: {"sent": int(m[1]), "received": int(m[2]), "drops": int(m[3]), "rejected": int(m[4]),
                    "non_unique": int(m[5])} for m in PERFDHCP_STATS.findall(result.stdout)}
    assert set(stats) == {"DISCOVER-OFFER", "REQUEST-ACK"}, result.stdout
    print(f"perfdhcp {' '.join(args)}: {stats}")
    return stats


def test_relay_mode_answers_perfdhcp_acting_as_a_relay(lab: Lab, start_dhcp: Any, client: Any, auth: dict[str, str],
                                                        services: Services) -> None:
    relayed_mac = "52:54:00:88:00:10"
    add_host(client, auth, "SN-LAB-88", relayed_mac, ip="10.88.0.10", prefix=24, gateway="10.88.0.1")
    # The relay: on the boot segment as 10.77.0.60, serving the remote
    # network 10.88.0.0/24 as 10.88.0.1 (its giaddr); provisiond routes there.
    relay = lab.add_client("52:54:00:77:00:60", "10.77.0.60/24")
    lab.run(relay, "ip", "addr", "add", "10.88.0.1/24", "dev", "eth0", check=True)
    lab.run(lab.server_ns, "ip", "route", "add", "10.88.0.0/24", "via", "10.77.0.60", check=True)
    server = start_dhcp("relay", unknown_mac="local",
                        dhcp_subnets="[{network: 10.88.0.0/24, router: 10.88.0.1, pool: 10.88.0.100-10.88.0.199}]")
    # 20 simulated clients (unknown MACs: pool addresses) behind the relay.
    pool = perfdhcp(lab, relay, "-R", "20", "-n", "40", "-r", "10")
    # One known host behind the relay: its static address.
    known = perfdhcp(lab, relay, "-b", f"mac={relayed_mac}", "-R", "1", "-n", "3", "-r", "5")
    text = server.stop()
    discovers = [line for line in text.splitlines() if "DHCPDISCOVER" in line]
    assert len(discovers) >= pool["DISCOVER-OFFER"]["received"] + known["DISCOVER-OFFER"]["received"]
    assert all(": offered 10.88.0." in line for line in discovers), text
    for stats in (pool, known):
        assert stats["DISCOVER-OFFER"]["received"] > 0, text
        assert stats["REQUEST-ACK"]["received"] > 0, text
        assert stats["REQUEST-ACK"]["rejected"] == stats["REQUEST-ACK"]["non_unique"] == 0
    with services.db.read() as session:
        bound = session.scalars(select(models.Lease.ip).where(models.Lease.state == "bound")).all()
    assert bound and all(ip.startswith("10.88.0.") for ip in bound)
    assert len(set(bound)) == len(bound)
    assert "relayed by 10.88.0.1" in text
    line = "DHCP: acknowledged 10.88.0.10 for 3600 s, boot file lpxelinux.0"
    assert line in timeline(client, auth, "SN-LAB-88", line)
