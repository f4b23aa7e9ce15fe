"""``provctl groups``: named sets of hosts that carry template variables."""

from __future__ import annotations

from typing import Any

import click

from provisiond.cli.client import ApiClient, pass_api
from provisiond.cli.hosts import parse_assignments
from provisiond.cli.output import echo_json, echo_table, echo_yaml, json_option

VAR_HELP = "Group variable NAME=VALUE (VALUE read as YAML); repeatable."


@click.group()
def groups() -> None:
    """Groups: variables shared by their hosts; a higher priority wins."""


@groups.command("list")
@json_option
@pass_api
def list_groups(api: ApiClient, as_json: bool) -> None:
    """List groups: NAME PRIORITY HOSTS DESCRIPTION (lowest priority first)."""
    body = api.list_groups()
    if as_json:
        echo_json(body)
        return
    echo_table(("NAME", "PRIORITY", "HOSTS", "DESCRIPTION"),
               [(g["name"], g["priority"], g.get("hosts"), g.get("description")) for g in body["groups"]])


@groups.command("show")
@click.argument("name")
@json_option
@pass_api
def show_group(api: ApiClient, name: str, as_json: bool) -> None:
    """Show the group NAME with its variables."""
    group = api.get_group(name)
    if as_json:
        echo_json(group)
    else:
        echo_yaml(group)


@groups.command("add")
@click.argument("name")
@click.option("--priority", type=int, default=0, show_default=True,
              help="Variables of a higher-priority group win over a lower one's.")
@click.option("--description", default="", help="What the group is.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help=VAR_HELP)
@click.option("--install-cap", type=int, help="At most this many of its hosts install at once (a rack's uplink).")
@json_option
@pass_api
def add_group(api: ApiClient, name: str, priority: int, description: str, variables: tuple[str, ...],
              install_cap: int | None, as_json: bool) -> None:
    """Create the group NAME."""
    group = api.create_group({"name": name, "priority": priority, "description": description,
                              "variables": parse_assignments(variables), "install_cap": install_cap})
    if as_json:
        echo_json(group)
    else:
        click.echo(f"added group {group['name']}")


@groups.command("edit")
@click.argument("name")
@click.option("--priority", type=int, help="New priority.")
@click.option("--description", help="New description.")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="Set a variable (others are kept; VALUE read as YAML); repeatable.")
@click.option("--unset-var", "unset", multiple=True, metavar="NAME", help="Remove a variable; repeatable.")
@click.option("--install-cap", type=int, help="New per-group install cap (0 removes it).")
@json_option
@pass_api
def edit_group(api: ApiClient, name: str, priority: int | None, description: str | None,
               variables: tuple[str, ...], unset: tuple[str, ...], install_cap: int | None, as_json: bool) -> None:
    """Change the group NAME; what is not mentioned is kept."""
    changes: dict[str, Any] = {k: v for k, v in (("priority", priority), ("description", description))
                               if v is not None}
    if install_cap is not None:
        changes["install_cap"] = install_cap or None
    if unset:
        current = api.get_group(name)["variables"]
        for key in unset:
            if key not in current:
                raise click.BadParameter(f"group {name} has no variable {key!r}", param_hint="--unset-var")
    if variables or unset:  # a JSON Merge Patch: the server keeps the other variables; null drops one
        changes["variables"] = {**{key: None for key in unset}, **parse_assignments(variables)}
    if not changes:
        raise click.UsageError("nothing to change: give --priority, --description, --var, --unset-var "
                               "or --install-cap")
    group = api.patch_group(name, changes)
    if as_json:
        echo_json(group)
    else:
        click.echo(f"edited group {name}: {', '.join(sorted(changes))}")


@groups.command("rm")
@click.argument("name")
@json_option
@pass_api
def remove_group(api: ApiClient, name: str, as_json: bool) -> None:
    """Delete the group NAME (only when no host is in it)."""
    api.delete_group(name)
    if as_json:
        echo_json({"deleted": name})
    else:
        click.echo(f"deleted group {name}")
