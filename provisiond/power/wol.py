"""Wake-on-LAN for machines without a BMC: a magic packet (6 × ``ff`` then
the MAC 16 times) to UDP port 9, built with scapy. It can only power a
machine on, and says so for everything else: it cannot tell whether the
machine is on, reset it, power it off or choose its boot device.

With ``wol_interface`` set the packet leaves that interface as a raw
Ethernet broadcast frame (the machine's segment, no IP needed); otherwise it
is a UDP datagram to ``wol_broadcast`` (a directed broadcast a router may
forward).
"""

from __future__ import annotations

import socket
from pathlib import Path

from provisiond.power.base import BmcError, BootDevice, BootSetting, Power, PowerDriver

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"


def magic_payload(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return b"\xff" * 6 + raw * 16


def magic_frame(mac: str, source_mac: str, broadcast: str, port: int) -> bytes:
    """The whole Ethernet frame sent on ``wol_interface``."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    packet = (Ether(dst=BROADCAST_MAC, src=source_mac) / IP(src="0.0.0.0", dst=broadcast)
              / UDP(sport=port, dport=port) / Raw(load=magic_payload(mac)))
    return bytes(packet)


class WolDriver(PowerDriver):
    name = "wol"
    sets_boot_device = False

    def _mac(self, operation: str) -> str:
        if not self.target.mac:
            raise BmcError(self.target, operation, "the host has no primary MAC to wake")
        return self.target.mac

    def power_on(self) -> None:
        mac = self._mac("power on")
        options = self.options
        try:
            if options.wol_interface:
                self._send_frame(mac)
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.sendto(magic_payload(mac), (options.wol_broadcast, options.wol_port))
        except OSError as exc:
            raise BmcError(self.target, "power on", f"could not send the magic packet: {exc.strerror or exc}") from None

    def _send_frame(self, mac: str) -> None:
        interface = self.options.wol_interface
        source = Path(f"/sys/class/net/{interface}/address").read_text().strip()
        frame = magic_frame(mac, source, self.options.wol_broadcast, self.options.wol_port)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((interface, 0))
            sock.send(frame)

    def power_boot(self) -> str:
        self.power_on()
        return "woken (Wake-on-LAN cannot reset a machine that is on)"

    def power_status(self) -> Power:
        raise self.unsupported("power status", "Wake-on-LAN cannot tell whether a machine is on")

    def power_off(self) -> None:
        raise self.unsupported("power off", "Wake-on-LAN can only power a machine on")

    def power_reset(self) -> None:
        raise self.unsupported("power reset", "Wake-on-LAN can only power a machine on")

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None:
        raise self.unsupported(f"set boot device {device}",
                               "Wake-on-LAN cannot choose the boot device: the machine's own boot order decides")

    def get_boot_device(self) -> BootSetting:
        raise self.unsupported("get boot device", "Wake-on-LAN cannot read the boot device")
