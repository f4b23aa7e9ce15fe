"""``provctl hosts``: the data source's hosts (list, show, add, edit, rm,
import, export)."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import click
import yaml

from provisiond.cli.client import ApiClient, pass_api
from provisiond.cli.output import compact, echo_json, echo_table, echo_yaml, json_option

LIST_COLUMNS = ("SERIAL", "HOSTNAME", "IP", "PRIMARY-MAC", "PROFILE", "STATE", "GROUPS")
#: Output-only keys of a host document; never sent back.
READ_ONLY = ("state", "state_reason")


# --------------------------------------------------------------------------- parsing helpers


def yaml_scalar(text: str, option: str = "--var") -> Any:
    """``16`` → 16, ``true`` → True, ``[a, b]`` → a list, empty → None.
    Colon-separated digits (MACs, times) stay text, whatever YAML 1.1 says."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise click.BadParameter(f"{text!r}: {problem} (quote the value to pass it as text)",
                                 param_hint=option) from None
    if isinstance(value, int | float) and not isinstance(value, bool) and ":" in text:
        return text
    return value


def split_assignment(item: str, option: str = "--var") -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint=option)
    return key.strip(), value


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``--var k=v`` options → ``{k: v}`` with the values read as YAML scalars."""
    return {key: yaml_scalar(value) for key, value in (split_assignment(item) for item in items)}


def set_path(base: Any, path: Sequence[str], value: Any) -> Any:
    """``base`` with the mapping entry at ``path`` set to ``value`` (a copy;
    missing or empty mappings on the way are created)."""
    if not path:
        return value
    result = copy.deepcopy(base) if isinstance(base, dict) else {}
    result[path[0]] = set_path(result.get(path[0]), path[1:], value)
    return result


def editable(host: Mapping[str, Any]) -> dict[str, Any]:
    """A host document as it may be sent back: no output-only keys."""
    document = {k: copy.deepcopy(v) for k, v in host.items() if k not in READ_ONLY}
    if isinstance(document.get("bmc"), dict):
        document["bmc"].pop("password_set", None)
    return document


def parse_sets(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``--set a.b=v`` options → ``(["a", "b"], v)`` with ``v`` read as a YAML scalar."""
    result = []
    for item in items:
        dotted, raw = split_assignment(item, "--set")
        path = dotted.split(".")
        if any(not part for part in path):
            raise click.BadParameter(f"{dotted!r} is not a field path (e.g. hardware.cpus)", param_hint="--set")
        result.append((path, yaml_scalar(raw, "--set")))
    return result


def edit_changes(patch: Mapping[str, Any], sets: Iterable[tuple[list[str], Any]]) -> dict[str, Any]:
    """The PATCH body, a JSON Merge Patch (RFC 7396) as the server applies
    it: ``patch`` (a --file) with each ``--set a.b=v`` written into it as
    ``{"a": {"b": v}}``. The server merges mappings, so siblings (other
    variables, other hardware fields) are kept; an empty VALUE is null,
    which clears the field."""
    changes: dict[str, Any] = copy.deepcopy(dict(patch))
    for path, value in sets:
        if path[0] == "bmc" and path[1:2] == ["password"]:
            raise click.UsageError("a password never goes on the command line: use --bmc-password (asks for it) "
                                   "or --bmc-password-stdin")
        changes = set_path(changes, path, value)
    return changes


def read_document(path: str) -> dict[str, Any]:
    """One host (or patch) document from a YAML or JSON file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--file") from None
    if isinstance(data, list) or (isinstance(data, dict) and "hosts" in data):
        raise click.BadParameter(f"{path} holds several hosts; load it with `provctl hosts import`",
                                 param_hint="--file")
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path} must hold one mapping of host fields", param_hint="--file")
    return data


def read_password(stream: TextIO) -> str:
    """The first line of ``stream``, without its newline."""
    password = stream.readline().rstrip("\r\n")
    if not password:
        raise click.BadParameter("nothing on stdin", param_hint="--bmc-password-stdin")
    return password


def with_password(document: dict[str, Any], password: str) -> dict[str, Any]:
    bmc = document.get("bmc")
    return {**document, "bmc": {**(bmc if isinstance(bmc, dict) else {}), "password": password}}


def primary_mac(host: Mapping[str, Any]) -> str | None:
    nics = host.get("nics") or []
    for nic in nics:
        if nic.get("primary"):
            return str(nic["mac"])
    return str(nics[0]["mac"]) if nics else None


# --------------------------------------------------------------------------- commands


@click.group()
def hosts() -> None:
    """Hosts in the data source: one record per physical server."""


@hosts.command("list")
@click.option("--group", help="Only hosts in this group.")
@click.option("--profile", help="Only hosts with this install profile.")
@click.option("--state", help="Only hosts in this state (idle, armed, installing, installed, failed...).")
@click.option("--site", help="Only hosts at this site.")
@click.option("--rack", help="Only hosts in this rack.")
@click.option("--search", "-q", help="Text to look for in serial, hostname, IP or MAC.")
@click.option("--limit", type=click.IntRange(1), help="At most this many hosts.")
@click.option("--offset", type=click.IntRange(0), help="Skip this many hosts first.")
@json_option
@pass_api
def list_hosts(api: ApiClient, group: str | None, profile: str | None, state: str | None, site: str | None,
               rack: str | None, search: str | None, limit: int | None, offset: int | None, as_json: bool) -> None:
    """List hosts: SERIAL HOSTNAME IP PRIMARY-MAC PROFILE STATE GROUPS."""
    body = api.list_hosts({"group": group, "profile": profile, "state": state, "site": site, "rack": rack,
                           "q": search, "limit": limit, "offset": offset})
    if as_json:
        echo_json(body)
        return
    echo_table(LIST_COLUMNS, [
        (h["serial"], h["hostname"], h.get("ip"), primary_mac(h), h["profile"], h.get("state"), h.get("groups"))
        for h in body["hosts"]
    ])


@hosts.command("show")
@click.argument("serial")
@json_option
@pass_api
def show_host(api: ApiClient, serial: str, as_json: bool) -> None:
    """Show the host with serial number SERIAL (the BMC password never
    appears: only whether one is set)."""
    host = api.get_host(serial)
    if as_json:
        echo_json(host)
    else:
        echo_yaml(compact(host))


@hosts.command("add")
@click.option("--file", "-f", "path", type=click.Path(exists=True, dir_okay=False),
              help="A YAML or JSON file with one host document (instead of the options below).")
@click.option("--serial", help="Serial number (unique).")
@click.option("--hostname", help="Host name, e.g. web01.example.com (unique).")
@click.option("--mac", "macs", multiple=True, help="NIC MAC address; repeat for more NICs (the first is primary).")
@click.option("--ip", help="IPv4 address.")
@click.option("--prefix", type=int, help="Prefix length of the address, e.g. 24.")
@click.option("--gateway", help="Default gateway.")
@click.option("--dns", multiple=True, help="DNS server; repeatable.")
@click.option("--profile", help="Install profile (see `provctl profiles list`).")
@click.option("--os", "os_name", help="OS label, e.g. rocky-9.")
@click.option("--group", "groups", multiple=True, help="Group to join; repeatable.")
@click.option("--site", help="Site.")
@click.option("--rack", help="Rack.")
@click.option("--owner", help="Owner (team or person).")
@click.option("--protected", is_flag=True, help="Refuse deletion without --force.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Host variable (VALUE read as YAML: 4 is a number, '\"4\"' text); repeatable.")
@click.option("--bmc-type", type=click.Choice(["ipmi", "wol", "fake"]), help="BMC kind.")
@click.option("--bmc-address", help="BMC address (IP or name).")
@click.option("--bmc-port", type=int, help="BMC port (IPMI: 623).")
@click.option("--bmc-user", help="BMC user name.")
@click.option("--bmc-password", "ask_password", is_flag=True, help="Ask for the BMC password (not echoed).")
@click.option("--bmc-password-stdin", is_flag=True,
              help="Read the BMC password from the first line of stdin (never put it on a command line).")
@json_option
@pass_api
def add_host(api: ApiClient, /, path: str | None, ask_password: bool, bmc_password_stdin: bool, as_json: bool,
             **options: Any) -> None:
    """Add one host, from --file or from options.

    \b
    provctl hosts add --serial SN1 --hostname web02.example.com \\
        --mac 52:54:00:00:00:09 --ip 10.0.0.22 --prefix 24 --profile web_server
    provctl hosts add --file host.yaml --bmc-password-stdin < bmc-password.txt
    """
    document = options_document(options)
    if path and document:
        raise click.UsageError("give --file or host options, not both")
    if path:
        document = read_document(path)
    if not document:
        raise click.UsageError("give --file FILE, or at least --serial, --hostname, --mac and --profile")
    if ask_password and bmc_password_stdin:
        raise click.UsageError("give --bmc-password or --bmc-password-stdin, not both")
    if bmc_password_stdin:
        document = with_password(document, read_password(sys.stdin))
    if ask_password:
        document = with_password(document, click.prompt("BMC password", hide_input=True, confirmation_prompt=True,
                                                        err=True))
    host = api.create_host(document)
    if as_json:
        echo_json(host)
    else:
        click.echo(f"added host {host['serial']} ({host['hostname']})")


def options_document(options: Mapping[str, Any]) -> dict[str, Any]:
    """The host document the ``hosts add`` options describe (unset ones left out)."""
    document: dict[str, Any] = {
        "serial": options["serial"], "hostname": options["hostname"], "macs": list(options["macs"]),
        "ip": options["ip"], "prefix": options["prefix"], "gateway": options["gateway"],
        "dns": list(options["dns"]), "profile": options["profile"], "os": options["os_name"],
        "groups": list(options["groups"]), "site": options["site"], "rack": options["rack"],
        "owner": options["owner"], "protected": options["protected"] or None,
        "variables": parse_assignments(options["variables"]),
        "bmc": {"type": options["bmc_type"], "address": options["bmc_address"], "port": options["bmc_port"],
                "user": options["bmc_user"]},
    }
    return compact(document)


@hosts.command("edit")
@click.argument("serial")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE",
              help="Set a field; dotted paths reach into bmc, hardware and variables "
                   "(hardware.cpus=16, bmc.user=admin, variables.role=web). VALUE is read as YAML; "
                   "an empty VALUE clears the field. Repeatable.")
@click.option("--file", "-f", "path", type=click.Path(exists=True, dir_okay=False),
              help="A YAML or JSON file of fields to change, merged as the --set options are (JSON Merge Patch).")
@click.option("--bmc-password", "ask_password", is_flag=True, help="Ask for a new BMC password (not echoed).")
@click.option("--bmc-password-stdin", is_flag=True, help="Read a new BMC password from the first line of stdin.")
@json_option
@pass_api
def edit_host(api: ApiClient, serial: str, sets: tuple[str, ...], path: str | None, ask_password: bool,
              bmc_password_stdin: bool, as_json: bool) -> None:
    """Change fields of the host SERIAL; other fields are kept.

    The change is a JSON Merge Patch (RFC 7396), as PATCH /api/v1/hosts/SN
    takes it: mappings (variables, bmc, hardware) merge key by key, an empty
    VALUE clears a field or drops a variable, lists are replaced whole.

    \b
    provctl hosts edit SN1 --set hardware.cpus=16 --set variables.role=web
    provctl hosts edit SN1 --set variables.ntp_server=      # drop one variable
    provctl hosts edit SN1 --bmc-password                   # asks for it
    """
    if ask_password and bmc_password_stdin:
        raise click.UsageError("give --bmc-password or --bmc-password-stdin, not both")
    parsed = parse_sets(sets)
    patch = read_document(path) if path else {}
    changes = edit_changes(patch, parsed)
    if bmc_password_stdin:
        changes = with_password(changes, read_password(sys.stdin))
    if ask_password:
        changes = with_password(changes, click.prompt("BMC password", hide_input=True, confirmation_prompt=True,
                                                      err=True))
    if not changes:
        raise click.UsageError("nothing to change: give --set FIELD=VALUE, --file, --bmc-password or "
                               "--bmc-password-stdin")
    host = api.patch_host(serial, changes)
    if as_json:
        echo_json(host)
    else:
        click.echo(f"edited host {serial}: {', '.join(sorted(changes))}")


@hosts.command("rm")
@click.argument("serial")
@click.option("--force", is_flag=True, help="Delete even a protected host.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_api
def remove_host(api: ApiClient, serial: str, force: bool, yes: bool, as_json: bool) -> None:
    """Delete the host SERIAL from the data source (asks first unless --yes)."""
    if not yes:
        click.confirm(f"Delete host {serial} from the data source?", abort=True, err=True)
    api.delete_host(serial, force=force)
    if as_json:
        echo_json({"deleted": serial})
    else:
        click.echo(f"deleted host {serial}")


@hosts.command("import")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["yaml", "json", "csv"]),
              help="File format (default: from the file name; YAML unless .csv or .json).")
@json_option
@pass_api
def import_hosts(api: ApiClient, path: str, fmt: str | None, as_json: bool) -> None:
    """Add or update (by serial number) every host in FILE, all or nothing.

    An error names the file, line and field; nothing is written then.
    """
    try:
        body = Path(path).read_bytes()
    except OSError as exc:
        raise click.FileError(path, str(exc)) from None
    result = api.import_hosts(body, Path(path).name, fmt)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"imported {Path(path).name}: {result['created']} created, {result['updated']} updated, "
                   f"{result['groups']} group(s)")


@hosts.command("export")
@click.option("--format", "fmt", type=click.Choice(["yaml", "csv"]), default="yaml", show_default=True,
              help="Output format.")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8", atomic=True), default="-",
              help="Write to this file instead of stdout.")
@json_option
@pass_api
def export_hosts(api: ApiClient, fmt: str, output: TextIO, as_json: bool) -> None:
    """Export every host (and the groups, in YAML) in a form `hosts import`
    reads back. BMC passwords are never exported."""
    if as_json and fmt == "csv":
        raise click.UsageError("--json exports the YAML document as JSON; it cannot be combined with --format csv")
    text = api.export_hosts(fmt)
    if as_json:
        text = json.dumps(yaml.safe_load(text), indent=2, ensure_ascii=False) + "\n"
    output.write(text)
