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
``disks`` is ``sda:480;sdb:4000`` (GB) or, when a disk has a model, a JSON
list of ``{name, size_gb, model}``; ``variables`` is a JSON object. Errors
name the field as the host document does (``nics[1].mac``, ``bmc.port``).
``bmc_password`` is never exported; left empty on import it keeps the stored one.

YAML: a list of host documents (see :mod:`provisiond.inventory.schema`), or a
mapping with ``groups:`` and ``hosts:`` lists. Only plain decimal numbers are
numbers: YAML 1.1 would read an unquoted ``52:54:00:00:00:01`` as a base-60
integer and a serial number ``00123`` as octal 83; here both stay text.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from provisiond.errors import ValidationError
from provisiond.inventory import fields
from provisiond.inventory.groups import GroupSpec, parse_group
from provisiond.inventory.hosts import ImportRow
from provisiond.inventory.records import Disk, HostRecord
from provisiond.inventory.schema import host_to_dict, parse_host

CSV_COLUMNS = (
    "serial hostname macs ip prefix gateway dns bmc_type bmc_address bmc_port bmc_user bmc_password "
    "manufacturer model cpus memory_mib disks profile os owner groups site rack protected variables"
).split()
FORMATS = ("yaml", "csv", "json")

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class _Loader(yaml.SafeLoader):
    """SafeLoader, except that an unquoted scalar is a number only when it
    is written as a plain decimal; base 60, octal, hex, ``1_000`` or leading
    zeros stay text, exactly as written."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    _FLOAT_TAG,
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


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
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.DictReader(iter(lines), restkey="__extra__")
    try:
        if not reader.fieldnames:
            raise ValidationError("header", "the CSV file is empty; the first line names the columns",
                                  f"{filename}:1")
        header = _csv_header(reader.fieldnames, f"{filename}:1")
        reader.fieldnames = header
        for row, line in _csv_records(reader, lines):
            location = f"{filename}:{line}"
            if row.get("__extra__"):
                raise ValidationError("row", f"{len(header) + len(row['__extra__'])} cells for {len(header)} columns",
                                      location)
            try:
                spec, password = parse_host(csv_row_to_document(row), profiles)
            except ValidationError as exc:
                raise exc.at(location) from None
            yield ImportRow(spec, password, location)
    except csv.Error as exc:
        raise ValidationError("file", f"not valid CSV: {exc}", f"{filename}:{reader.line_num}") from None


def _csv_header(fieldnames: Iterable[str], location: str) -> list[str]:
    header = [name.strip() for name in fieldnames]
    for index, column in enumerate(header):
        if column not in CSV_COLUMNS:
            raise ValidationError(column, f"unknown column (known: {', '.join(CSV_COLUMNS)})", location)
        if column in header[:index]:
            raise ValidationError(column, "the column is named twice", location)
    if "serial" not in header:
        raise ValidationError("serial", "the CSV file needs a serial column", location)
    return header


def _csv_records(reader: csv.DictReader[str], lines: list[str]) -> Iterator[tuple[dict[str, Any], int]]:
    """Each row with the line it starts on (a quoted cell may span lines;
    ``reader.line_num`` is where the row ends)."""
    end = reader.line_num
    for row in reader:
        start = end + 1
        while start < reader.line_num and not lines[start - 1].strip():
            start += 1  # blank lines the reader skipped
        end = reader.line_num
        yield row, start


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
    hardware: dict[str, Any] = {
        k: cells[k] for k in ("manufacturer", "model", "cpus", "memory_mib", "disks") if cells.get(k)
    }
    if hardware.get("disks", "").startswith("["):
        hardware["disks"] = _json_cell(hardware["disks"], "hardware.disks", "a JSON list")
    if hardware:
        doc["hardware"] = hardware
    if cells.get("variables"):
        doc["variables"] = _json_cell(cells["variables"], "variables", "a JSON object")
    return doc


def _json_cell(cell: str, field: str, expected: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError as exc:
        raise ValidationError(field, f"not {expected}: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise ValidationError(field, f"not {expected}: nested too deeply") from None


def _disks_cell(disks: tuple[Disk, ...] | None) -> str | None:
    """``sda:480;sdb:4000``, or JSON when that would lose something (a
    disk model, or an empty list, which means "expect no disks")."""
    if disks is None:
        return None
    if not disks or any(d.model for d in disks):
        return json.dumps([{"name": d.name, "size_gb": d.size_gb, "model": d.model} for d in disks])
    return ";".join(f"{d.name or ''}:{d.size_gb or ''}" for d in disks)


def export_csv(records: Iterable[HostRecord], secret: frozenset[str] = frozenset()) -> str:
    """``secret``: variable names whose values are masked (an import of the
    file keeps the stored values)."""
    from provisiond.kickstart.secrets import redact

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
            "disks": _disks_cell(record.disks),
            "profile": record.profile,
            "os": record.os,
            "owner": record.owner,
            "groups": ";".join(record.groups),
            "site": record.site,
            "rack": record.rack,
            "protected": "true" if record.protected else "false",
            "variables": json.dumps(redact(record.variables, secret), sort_keys=True) if record.variables else None,
        }
        writer.writerow(["" if cells[c] is None else cells[c] for c in CSV_COLUMNS])
    return out.getvalue()


# --------------------------------------------------------------------------- YAML


def _parse_yaml(text: str, filename: str, profiles: Collection[str]) -> ParsedImport:
    loader = _Loader(text)
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
        groups = [_located(lambda n: parse_group(_checked(loader.construct_document(n))), node, filename)
                  for node in group_nodes]
        hosts = []
        for node in host_nodes:
            spec, password = _located(lambda n: parse_host(_checked(loader.construct_document(n)), profiles),
                                      node, filename)
            hosts.append(ImportRow(spec, password, f"{filename}:{node.start_mark.line + 1}"))
        return ParsedImport(groups, hosts)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ValidationError("file", f"not valid YAML: {getattr(exc, 'problem', exc)}", f"{filename}{line}") from None
    except RecursionError:
        raise ValidationError("file", "nested too deeply", filename) from None
    finally:
        loader.dispose()


def _checked(document: Any) -> Any:
    """A YAML document as the JSON API would take it: no lone surrogates
    (YAML's ``"\\ud800"`` escapes make them), not nested too deeply."""
    fields.check_tree(document, "")
    return document


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
        raise exc.at(f"{filename}:{_field_line(node, exc.field)}") from None


def _field_line(node: yaml.Node, field: str) -> int:
    """The line of the deepest node on the path ``field`` (``nics[1].mac``)
    that the document has; the document's own line if none."""
    line = node.start_mark.line + 1
    for part in (p for p in re.split(r"[.\[\]]", field) if p):
        if isinstance(node, yaml.MappingNode):
            names = ("nics", "macs") if part == "nics" else (part,)
            match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value in names), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def export_yaml(records: Iterable[HostRecord], groups: list[dict[str, Any]] | None = None,
                secret: frozenset[str] = frozenset()) -> str:
    """``groups`` as answers show them (their secrets masked already);
    ``secret``: the hosts' variable names to mask."""
    hosts = []
    for record in records:
        doc = host_to_dict(record, secret)
        for key in ("state", "state_reason"):
            doc.pop(key)
        if doc["bmc"]:
            doc["bmc"].pop("password_set")
        hosts.append({k: v for k, v in doc.items() if v not in (None, [], {})})
    body: dict[str, Any] = {"hosts": hosts}
    if groups:
        body = {"groups": groups, **body}
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
