"""``provctl profiles``: install profiles and the kickstarts they compose."""

from __future__ import annotations

import click

from provisiond.cli.client import ApiClient, CheckFailed, pass_api
from provisiond.cli.output import echo_json, echo_table, echo_yaml, json_option


@click.group()
def profiles() -> None:
    """Install profiles (read from the server's profiles/ directory)."""


@profiles.command("list")
@json_option
@pass_api
def list_profiles(api: ApiClient, as_json: bool) -> None:
    """List profiles: NAME EXTENDS OS DESCRIPTION."""
    body = api.list_profiles()
    if as_json:
        echo_json(body)
        return
    echo_table(("NAME", "EXTENDS", "OS", "DESCRIPTION"),
               [(p["name"], p.get("extends"), p.get("os"), p.get("description")) for p in body["profiles"]])


@profiles.command("show")
@click.argument("name")
@json_option
@pass_api
def show_profile(api: ApiClient, name: str, as_json: bool) -> None:
    """Show the profile NAME with what it inherits resolved."""
    profile = api.get_profile(name)
    if as_json:
        echo_json(profile)
    else:
        echo_yaml(profile)


@profiles.command("check")
@json_option
@pass_api
def check(api: ApiClient, as_json: bool) -> None:
    """Render every host's kickstart and check every profile declares the
    variables its fragments use: for profiles and fragments edited on disk.
    Prints what fails and exits 11 if anything does."""
    body = api.check_profiles()
    if as_json:
        echo_json(body)
    else:
        for failure in body["failures"]:
            where = f" (fragment {failure['fragment']}" + (f" line {failure['line']}" if failure.get("line") else "") \
                + ")" if failure.get("fragment") else ""
            click.echo(f"{failure['serial']}\tprofile {failure['profile']}{where}: {failure['message']}")
        for problem in body["profiles"]:
            click.echo(f"profile {problem['profile']}: {problem['message']}")
        bad = len(body["failures"])
        click.echo(f"{body['hosts'] - bad} of {body['hosts']} host(s) render; {len(body['profiles'])} profile "
                   "problem(s)", err=bool(bad or body["profiles"]))
    if not body["ok"]:
        raise CheckFailed(f"{len(body['failures'])} host(s) do not render, {len(body['profiles'])} profile "
                          "problem(s)")


@profiles.command("render")
@click.argument("serial")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="One-off variable, the top layer (VALUE is text); repeatable.")
@click.option("--variables", "show_variables", is_flag=True,
              help="Print the layered variables the kickstart sees instead of the kickstart.")
@json_option
@pass_api
def render(api: ApiClient, serial: str, variables: tuple[str, ...], show_variables: bool, as_json: bool) -> None:
    """Print the kickstart composed for the host SERIAL, exactly as the
    server serves it (callback URLs carry the token PREVIEW).

    Variables layer global < groups (by priority) < profile < host < --var.
    With --json: the variables and the kickstart in one JSON object.
    """
    if show_variables and not as_json:
        echo_yaml(api.variables(serial, variables)["variables"])
        return
    text = api.kickstart(serial, variables)
    if as_json:
        echo_json({**api.variables(serial, variables), "kickstart": text})
    else:
        click.echo(text, nl=False)
