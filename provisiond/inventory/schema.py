"""The host document: how a host is written in JSON, YAML and (flattened) CSV.

``parse_host`` validates a whole document into a :class:`HostSpec`;
``host_to_dict`` is its inverse for output. BMC passwords go in, never out.

    serial: SN0001
    hostname: web01.example.com
    nics: [{mac: "52:54:00:00:00:01", name: eth0, primary: true}]   # or macs: [...]
    ip: 10.0.0.10
    prefix: 24                      # or netmask: 255.255.255.0
    gateway: 10.0.0.1
    dns: [10.0.0.2]
    bmc: {type: ipmi, address: 192.168.0.10, port: 623, user: admin, password: ...}
    hardware: {manufacturer: Dell, model: R710, cpus: 16, memory_mib: 65536,
               disks: [{name: sda, size_gb: 480}]}
    profile: web_server
    os: rocky-9
    owner: ops
    groups: [rack-a1]
    site: hz1
    rack: a1
    protected: false
    variables: {role: web}
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Any, Final

from provisiond.errors import ValidationError
from provisiond.inventory import fields
from provisiond.inventory.records import Bmc, Disk, HostRecord, HostSpec, Nic
from provisiond.power.base import driver_names


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: The document did not mention the BMC password: keep the stored one.
UNSET: Final = _Unset()

TOP_KEYS = frozenset(
    "serial hostname nics macs ip prefix netmask gateway dns bmc hardware profile os owner "
    "groups site rack protected variables".split()
)
#: Output-only keys that may come back in an edited export; ignored on input.
READ_ONLY_KEYS = frozenset({"state", "state_reason", "created_at", "updated_at"})
BMC_KEYS = frozenset({"type", "address", "port", "user", "password", "password_set"})
HARDWARE_KEYS = frozenset({"manufacturer", "model", "cpus", "memory_mib", "disks"})
#: The width of ``nics.name`` in the database.
NIC_NAME_LENGTH = 32


def parse_host(
    data: Mapping[str, Any], profiles: Collection[str], groups: Collection[str] | None = None
) -> tuple[HostSpec, str | None | _Unset]:
    """Validate a host document. Returns the spec and the BMC password
    (``UNSET`` when the document does not mention one)."""
    if not isinstance(data, Mapping):
        raise ValidationError("host", "expected a mapping of fields")
    for key in data:
        if key not in TOP_KEYS and key not in READ_ONLY_KEYS:
            raise ValidationError(str(key), f"unknown field (known: {', '.join(sorted(TOP_KEYS))})")
    if _given(data, "prefix") and _given(data, "netmask"):
        raise ValidationError("netmask", "give prefix or netmask, not both")
    profile = _profile(data.get("profile"), profiles)
    group_names = _group_names(data.get("groups"), groups)
    ip = _optional(data.get("ip"), lambda v: fields.ipv4(v, "ip"))
    mask_field = "prefix" if _given(data, "prefix") else "netmask"
    prefix = _optional(data.get(mask_field), lambda v: fields.prefix(v, mask_field))
    gateway = _optional(data.get("gateway"), lambda v: fields.ipv4(v, "gateway"))
    if ip is not None and prefix is None:
        raise ValidationError("prefix", "an address needs a prefix length or a netmask")
    hardware = _hardware(data.get("hardware"))
    bmc, password = _bmc(data.get("bmc"))
    spec = HostSpec(
        serial=fields.serial(data.get("serial")),
        hostname=fields.hostname(data.get("hostname")),
        profile=profile,
        nics=_nics(data),
        ip=ip,
        prefix=prefix,
        gateway=gateway,
        dns=tuple(fields.ipv4(v, "dns") for v in fields.string_list(data.get("dns"), "dns")),
        bmc=bmc,
        os=fields.text(data.get("os"), "os", 64),
        owner=fields.text(data.get("owner"), "owner"),
        groups=group_names,
        site=_optional(data.get("site"), lambda v: fields.name(v, "site")),
        rack=_optional(data.get("rack"), lambda v: fields.name(v, "rack")),
        protected=fields.boolean(data.get("protected", False), "protected"),
        variables=MappingProxyType(fields.variables(data.get("variables"))),
        **hardware,
    )
    if spec.ip and spec.prefix is not None:
        _check_address(spec)
    return spec, password


def _given(data: Mapping[str, Any], key: str) -> bool:
    """The document sets ``key`` (an empty value counts as not set)."""
    return data.get(key) not in (None, "")


def _optional(value: Any, parse: Any) -> Any:
    return None if value is None or value == "" else parse(value)


def _profile(value: Any, profiles: Collection[str]) -> str:
    if value in (None, ""):
        raise ValidationError("profile", "is required")
    profile = fields.name(value, "profile")
    if profile not in profiles:
        raise ValidationError("profile", f"unknown profile {profile!r} (known: {', '.join(sorted(profiles))})")
    return profile


def _group_names(value: Any, known: Collection[str] | None) -> tuple[str, ...]:
    names = tuple(fields.name(g, "groups") for g in fields.string_list(value, "groups"))
    for index, group in enumerate(names):
        if group in names[:index]:
            raise ValidationError("groups", f"group {group!r} is listed twice")
        if known is not None and group not in known:
            raise ValidationError("groups", f"unknown group {group!r}")
    return names


def _check_address(spec: HostSpec) -> None:
    import ipaddress

    network = ipaddress.IPv4Network(f"{spec.ip}/{spec.prefix}", strict=False)
    address = ipaddress.IPv4Address(spec.ip)
    if network.prefixlen <= 30 and address in (network.network_address, network.broadcast_address):
        which = "network" if address == network.network_address else "broadcast"
        raise ValidationError("ip", f"{spec.ip} is the {which} address of {network}, not a host address")
    if spec.gateway is None:
        return
    if ipaddress.IPv4Address(spec.gateway) not in network:
        raise ValidationError("gateway", f"{spec.gateway} is not in the host's network {network}")
    if spec.gateway == spec.ip:
        raise ValidationError("gateway", f"{spec.gateway} is the host's own address")


def _nics(data: Mapping[str, Any]) -> tuple[Nic, ...]:
    if _given(data, "nics") and _given(data, "macs"):
        raise ValidationError("macs", "give nics or macs, not both")
    if _given(data, "macs"):
        raw: list[Any] = [{"mac": m} for m in fields.string_list(data["macs"], "macs")]
        if raw:
            raw[0]["primary"] = True
    else:
        raw = data.get("nics") or []
        if not isinstance(raw, list):
            raise ValidationError("nics", "expected a list of {mac, name, primary}")
    if not raw:
        raise ValidationError("nics", "at least one NIC (MAC address) is required")
    nics = []
    for index, item in enumerate(raw):
        where = f"nics[{index}]"
        if isinstance(item, str):
            item = {"mac": item}
        if not isinstance(item, Mapping):
            raise ValidationError(where, "expected {mac, name, primary}")
        for key in item:
            if key not in ("mac", "name", "primary"):
                raise ValidationError(f"{where}.{key}", "unknown field (known: mac, name, primary)")
        nics.append(
            Nic(
                mac=fields.mac(item.get("mac"), f"{where}.mac"),
                name=_optional(item.get("name"), lambda v: fields.name(v, f"{where}.name", NIC_NAME_LENGTH)),
                primary=fields.boolean(item.get("primary", False), f"{where}.primary"),
            )
        )
    macs = [nic.mac for nic in nics]
    for mac in macs:
        if macs.count(mac) > 1:
            raise ValidationError("nics", f"MAC {mac} is listed twice")
    primaries = sum(nic.primary for nic in nics)
    if primaries > 1:
        raise ValidationError("nics", "only one NIC can be primary")
    if primaries == 0:
        nics[0] = Nic(mac=nics[0].mac, name=nics[0].name, primary=True)
    return tuple(nics)


def _hardware(raw: Any) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValidationError("hardware", "expected a mapping (manufacturer, model, cpus, memory_mib, disks)")
    for key in raw:
        if key not in HARDWARE_KEYS:
            raise ValidationError(f"hardware.{key}", f"unknown field (known: {', '.join(sorted(HARDWARE_KEYS))})")
    return {
        "manufacturer": fields.text(raw.get("manufacturer"), "hardware.manufacturer"),
        "model": fields.text(raw.get("model"), "hardware.model"),
        "cpus": _optional(raw.get("cpus"), lambda v: fields.integer(v, "hardware.cpus", 1, 4096)),
        "memory_mib": _optional(
            raw.get("memory_mib"), lambda v: fields.integer(v, "hardware.memory_mib", 1, 64 * 1024 * 1024)
        ),
        "disks": _disks(raw.get("disks")),
    }


def _disks(raw: Any) -> tuple[Disk, ...] | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):  # CSV: "sda:480;sdb:4000"
        items: list[Any] = []
        for part in fields.string_list(raw, "hardware.disks"):
            disk_name, _, size = part.rpartition(":")
            items.append({"name": disk_name or None, "size_gb": size})
        raw = items
    if not isinstance(raw, list):
        raise ValidationError("hardware.disks", "expected a list of {name, size_gb, model}")
    disks = []
    for index, item in enumerate(raw):
        where = f"hardware.disks[{index}]"
        if not isinstance(item, Mapping):
            raise ValidationError(where, "expected {name, size_gb, model}")
        for key in item:
            if key not in ("name", "size_gb", "model"):
                raise ValidationError(f"{where}.{key}", "unknown field (known: name, size_gb, model)")
        disks.append(
            Disk(
                name=_optional(item.get("name"), lambda v: fields.name(v, f"{where}.name")),
                size_gb=_optional(item.get("size_gb"), lambda v: fields.integer(v, f"{where}.size_gb", 1, 10**6)),
                model=fields.text(item.get("model"), f"{where}.model"),
            )
        )
    return tuple(disks)


def _bmc(raw: Any) -> tuple[Bmc | None, str | None | _Unset]:
    if raw is None or raw == {}:
        return None, UNSET
    if not isinstance(raw, Mapping):
        raise ValidationError("bmc", "expected a mapping (type, address, port, user, password)")
    for key in raw:
        if key not in BMC_KEYS:
            raise ValidationError(f"bmc.{key}", f"unknown field (known: {', '.join(sorted(BMC_KEYS - {'password_set'}))})")
    kind = raw.get("type") or "ipmi"
    if kind not in driver_names():
        raise ValidationError("bmc.type", f"{kind!r} is not one of {', '.join(driver_names())}")
    address = raw.get("address")
    if address not in (None, ""):
        address = _bmc_address(address)
    bmc = Bmc(
        type=kind,
        address=address or None,
        port=_optional(raw.get("port"), lambda v: fields.integer(v, "bmc.port", 1, 65535)),
        user=fields.text(raw.get("user"), "bmc.user", 64),
    )
    if kind == "ipmi" and not bmc.address:
        raise ValidationError("bmc.address", "an IPMI BMC needs an address")
    password: str | None | _Unset = UNSET
    if "password" in raw:
        value = raw["password"]
        if value is not None and not isinstance(value, str):
            raise ValidationError("bmc.password", "expected text")
        if value:
            fields.one_line(value, "bmc.password")
        password = value or None
    return bmc, password


def _bmc_address(value: Any) -> str:
    """An IPv4 address or a host name. Loopback is allowed: a BMC reached
    through a local tunnel or proxy (``ssh -L``, an IPMI relay)."""
    if isinstance(value, bool):
        raise ValidationError("bmc.address", f"{value!r} is not an IPv4 address or host name")
    try:
        address = ipaddress.IPv4Address(str(value).strip())
    except ValueError:
        return fields.hostname(value, "bmc.address")
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        raise ValidationError("bmc.address", f"{address} is not a usable BMC address")
    return str(address)


def host_to_dict(record: HostRecord, secret: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The output document: never carries the BMC password, only whether one
    is set; the variables named in ``secret`` are masked
    (:mod:`provisiond.kickstart.secrets`)."""
    bmc = None
    if record.bmc is not None:
        bmc = {
            "type": record.bmc.type,
            "address": record.bmc.address,
            "port": record.bmc.port,
            "user": record.bmc.user,
            "password_set": record.has_bmc_secret,
        }
    disks = None
    if record.disks is not None:
        disks = [{"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in record.disks]
    return {
        "serial": record.serial,
        "hostname": record.hostname,
        "nics": [{"mac": n.mac, "name": n.name, "primary": n.primary} for n in record.nics],
        "ip": record.ip,
        "prefix": record.prefix,
        "gateway": record.gateway,
        "dns": list(record.dns),
        "bmc": bmc,
        "hardware": {
            "manufacturer": record.manufacturer,
            "model": record.model,
            "cpus": record.cpus,
            "memory_mib": record.memory_mib,
            "disks": disks,
        },
        "profile": record.profile,
        "os": record.os,
        "owner": record.owner,
        "groups": list(record.groups),
        "site": record.site,
        "rack": record.rack,
        "protected": record.protected,
        "variables": _masked(record.variables, secret),
        "state": record.state,
        "state_reason": record.state_reason,
    }


def _masked(variables: Mapping[str, Any], secret: frozenset[str]) -> dict[str, Any]:
    from provisiond.kickstart.secrets import redact

    return redact(variables, secret) if secret else dict(variables)
