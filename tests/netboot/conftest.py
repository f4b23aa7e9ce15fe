"""Network namespaces for netboot tests: never the machine's own interfaces.

``lab`` builds a private L2 segment: namespace ``srv`` (provisiond, address
10.77.0.1/24) and any number of client namespaces, all joined by a bridge in
the server namespace. Everything is deleted at teardown. Needs root and
iproute2; under CI=true their absence fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import require

SERVER_ADDRESS = "10.77.0.1"
PREFIX = 24


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@dataclass
class Lab:
    tag: str
    server_ns: str
    clients: list[str] = field(default_factory=list)

    def ns_cmd(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]

    def run(self, ns: str, *args: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ns_cmd(ns, *args), capture_output=True, text=True, timeout=timeout, check=check)

    def add_client(self, mac: str, address: str | None = None) -> str:
        """A client namespace with interface ``eth0`` (MAC ``mac``) on the segment."""
        index = len(self.clients)
        ns = f"{self.tag}c{index}"
        host_end, peer_end = f"{self.tag}h{index}", f"{self.tag}p{index}"
        sh("ip", "netns", "add", ns)
        self.clients.append(ns)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", peer_end)
        sh("ip", "link", "set", host_end, "netns", self.server_ns)
        sh("ip", "link", "set", peer_end, "netns", ns)
        self.run(self.server_ns, "ip", "link", "set", host_end, "master", "br0", check=True)
        self.run(self.server_ns, "ip", "link", "set", host_end, "up", check=True)
        self.run(ns, "ip", "link", "set", peer_end, "name", "eth0", check=True)
        self.run(ns, "ip", "link", "set", "eth0", "address", mac, check=True)
        self.run(ns, "ip", "link", "set", "lo", "up", check=True)
        self.run(ns, "ip", "link", "set", "eth0", "up", check=True)
        if address:
            self.run(ns, "ip", "addr", "add", address, "dev", "eth0", check=True)
        return ns

    def destroy(self) -> None:
        for ns in [*self.clients, self.server_ns]:
            sh("ip", "netns", "pids", ns, check=False)
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab() -> Iterator[Lab]:
    require(os.geteuid() == 0, "network namespaces need root")
    require(shutil.which("ip") is not None, "needs iproute2 (ip)")
    tag = "pv" + uuid.uuid4().hex[:6]
    server_ns = f"{tag}s"
    created = sh("ip", "netns", "add", server_ns, check=False)
    require(created.returncode == 0, f"cannot create a network namespace: {created.stderr.strip()}")
    lab = Lab(tag, server_ns)
    try:
        lab.run(server_ns, "ip", "link", "set", "lo", "up", check=True)
        lab.run(server_ns, "ip", "link", "add", "br0", "type", "bridge", check=True)
        lab.run(server_ns, "ip", "addr", "add", f"{SERVER_ADDRESS}/{PREFIX}", "dev", "br0", check=True)
        lab.run(server_ns, "ip", "link", "set", "br0", "up", check=True)
        yield lab
    finally:
        lab.destroy()
