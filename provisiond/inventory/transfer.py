"""Import and export of the data source as YAML and CSV.

Parsing is pure: text in, validated rows out, each row remembering its file
and line so that an error can say ``hosts.csv:17: nics[0].mac: ...``. Writing
is :func:`provisiond.inventory.hosts.import_hosts`, in one transaction.

CSV columns (one host per line; empty cells mean "not set")::

    serial, hostname, macs, ip, prefix, gateway, dns, bmc_type, bmc_address,
    bmc_port, bmc_user, bmc_password, manufacturer, model, cpus, memory_mib,
    disks, profile, os, owner, groups, site, rack, protected, variables

``macs`` is ``eth0=52:54:00:00:00:01;eth1=52:54:00:00:00:02`` (the first is
primary; names optional), ``dns`` and ``groups`` are ``;``-separated,
``disks`` is ``sda:480;sdb:4000`` (GB), ``variables`` is a JSON object.
``bmc_password`` is never exported; left empty on import it keeps the stored one.

YAML: a list of host documents (see :mod:`provisiond.inventory.schema`), or a
mapping with ``groups:`` and ``hosts:`` lists.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from provisiond.errors import ValidationError
from provisiond.inventory.groups import GroupSpec, parse_group
from provisiond.inventory.hosts import ImportRow
from provisiond.inventory.records import HostRecord
from provisiond.inventory.schema import host_to_dict, parse_host

CSV_COLUMNS = (
    "serial hostname macs ip prefix gateway dns bmc_type bmc_address bmc_port bmc_user bmc_password "
    "manufacturer model cpus memory_mib disks profile os owner groups site rack protected variables"
).split()
FORMATS = ("yaml", "csv", "json")


@dataclass(frozen=True)
class ParsedImport:
    groups: list[GroupSpec]
    hosts: list[ImportRow]


def guess_format(filename: str) -> str:
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith(".json"):
        return "json"
    return "yaml"


def parse_import(text: str, filename: str, fmt: str, profiles: Collection[str]) -> ParsedImport:
    if fmt == "csv":
        return ParsedImport(groups=[], hosts=list(_parse_csv(text, filename, profiles)))
    if fmt in ("yaml", "json"):
        return _parse_yaml(text, filename, profiles)
    raise ValidationError("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- CSV


def _parse_csv(text: str, filename: str, profiles: Collection[str]) -> Iterable[ImportRow]:
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="__extra__")
    if not reader.fieldnames:
        raise ValidationError("header", "the CSV file is empty; the first line names the columns", f"{filename}:1")
    header = [name.strip() for name in reader.fieldnames]
    for column in header:
        if column not in CSV_COLUMNS:
            raise ValidationError(column, f"unknown column (known: {', '.join(CSV_COLUMNS)})", f"{filename}:1")
    if "serial" not in header:
        raise ValidationError("serial", "the CSV file needs a serial column", f"{filename}:1")
    reader.fieldnames = header
    for row in reader:
        location = f"{filename}:{reader.line_num}"
        if row.get("__extra__"):
            raise ValidationError("row", f"{len(header) + len(row['__extra__'])} cells for {len(header)} columns",
                                  location)
        try:
            spec, password = parse_host(csv_row_to_document(row), profiles)
        except ValidationError as exc:
            raise exc.at(location) from None
        yield ImportRow(spec, password, location)


def csv_row_to_document(row: dict[str, str | None]) -> dict[str, Any]:
    cells = {k: (v or "").strip() for k, v in row.items() if k != "__extra__"}
    doc: dict[str, Any] = {}
    for key in ("serial", "hostname", "ip", "prefix", "gateway", "dns", "profile", "os", "owner", "groups",
                "site", "rack", "protected"):
        if cells.get(key):
            doc[key] = cells[key]
    if cells.get("macs"):
        nics = []
        for index, item in enumerate(part for part in cells["macs"].split(";") if part.strip()):
            name, _, mac = item.strip().rpartition("=")
            nics.append({"mac": mac, "name": name or None, "primary": index == 0})
        doc["nics"] = nics
    bmc = {k[4:]: cells[k] for k in ("bmc_type", "bmc_address", "bmc_port", "bmc_user") if cells.get(k)}
    if cells.get("bmc_password"):
        bmc["password"] = cells["bmc_password"]
    if bmc:
        doc["bmc"] = bmc
    hardware = {k: cells[k] for k in ("manufacturer", "model", "cpus", "memory_mib", "disks") if cells.get(k)}
    if hardware:
        doc["hardware"] = hardware
    if cells.get("variables"):
        try:
            doc["variables"] = json.loads(cells["variables"])
        except json.JSONDecodeError as exc:
            raise ValidationError("variables", f"not a JSON object: {exc.msg}") from None
    return doc


def export_csv(records: Iterable[HostRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for record in records:
        nics = sorted(record.nics, key=lambda n: not n.primary)
        cells = {
            "serial": record.serial,
            "hostname": record.hostname,
            "macs": ";".join(f"{n.name}={n.mac}" if n.name else n.mac for n in nics),
            "ip": record.ip,
            "prefix": record.prefix,
            "gateway": record.gateway,
            "dns": ";".join(record.dns),
            "bmc_type": record.bmc.type if record.bmc else None,
            "bmc_address": record.bmc.address if record.bmc else None,
            "bmc_port": record.bmc.port if record.bmc else None,
            "bmc_user": record.bmc.user if record.bmc else None,
            "bmc_password": None,
            "manufacturer": record.manufacturer,
            "model": record.model,
            "cpus": record.cpus,
            "memory_mib": record.memory_mib,
            "disks": None if record.disks is None else ";".join(
                f"{d.name or ''}:{d.size_gb or ''}" for d in record.disks),
            "profile": record.profile,
            "os": record.os,
            "owner": record.owner,
            "groups": ";".join(record.groups),
            "site": record.site,
            "rack": record.rack,
            "protected": "true" if record.protected else "false",
            "variables": json.dumps(dict(record.variables), sort_keys=True) if record.variables else None,
        }
        writer.writerow(["" if cells[c] is None else cells[c] for c in CSV_COLUMNS])
    return out.getvalue()


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, filename: str, profiles: Collection[str]) -> ParsedImport:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return ParsedImport([], [])
        if isinstance(root, yaml.MappingNode):
            sections = {k.value: v for k, v in root.value}
            for key, node in root.value:
                if key.value not in ("groups", "hosts"):
                    raise ValidationError(str(key.value), "unknown section (known: groups, hosts)",
                                          f"{filename}:{key.start_mark.line + 1}")
            group_nodes = _items(sections.get("groups"), "groups", filename)
            host_nodes = _items(sections.get("hosts"), "hosts", filename)
        else:
            group_nodes = []
            host_nodes = _items(root, "hosts", filename)
        groups = [_located(lambda n: parse_group(loader.construct_document(n)), node, filename)
                  for node in group_nodes]
        hosts = []
        for node in host_nodes:
            spec, password = _located(lambda n: parse_host(loader.construct_document(n), profiles), node, filename)
            hosts.append(ImportRow(spec, password, f"{filename}:{node.start_mark.line + 1}"))
        return ParsedImport(groups, hosts)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ValidationError("file", f"not valid YAML: {getattr(exc, 'problem', exc)}", f"{filename}{line}") from None
    finally:
        loader.dispose()


def _items(node: yaml.Node | None, section: str, filename: str) -> list[yaml.Node]:
    if node is None:
        return []
    if not isinstance(node, yaml.SequenceNode):
        raise ValidationError(section, "expected a list", f"{filename}:{node.start_mark.line + 1}")
    return list(node.value)


def _located(parse: Any, node: yaml.Node, filename: str) -> Any:
    """Run ``parse`` on a node; a validation error names the field's own line."""
    try:
        return parse(node)
    except ValidationError as exc:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            top = exc.field.split(".")[0].split("[")[0]
            for key, _value in node.value:
                if key.value == top:
                    line = key.start_mark.line + 1
        raise exc.at(f"{filename}:{line}") from None


def export_yaml(records: Iterable[HostRecord], groups: list[dict[str, Any]] | None = None) -> str:
    hosts = []
    for record in records:
        doc = host_to_dict(record)
        for key in ("state", "state_reason"):
            doc.pop(key)
        if doc["bmc"]:
            doc["bmc"].pop("password_set")
        hosts.append({k: v for k, v in doc.items() if v not in (None, [], {})})
    body: dict[str, Any] = {"hosts": hosts}
    if groups:
        body = {"groups": groups, **body}
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
