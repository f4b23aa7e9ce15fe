"""``provctl audit``: who did what, to which hosts, when, with what outcome."""

from __future__ import annotations

import click

from provisiond.cli.client import ApiClient, pass_api
from provisiond.cli.output import echo_json, echo_table, json_option


@click.command("audit")
@click.option("--principal", help="Only what this principal did (as the trail names it: 'token ops').")
@click.option("--host", help="Only actions on this host (serial number).")
@click.option("--action", help="Only this action (hosts.edit, installs.arm, tokens.create...).")
@click.option("--since", metavar="TIME", help="From this time (ISO 8601, UTC unless it says).")
@click.option("--until", metavar="TIME", help="Before this time.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@json_option
@pass_api
def audit(api: ApiClient, principal: str | None, host: str | None, action: str | None, since: str | None,
          until: str | None, limit: int, as_json: bool) -> None:
    """The audit trail, newest first: TIME PRINCIPAL ACTION TARGETS OUTCOME MESSAGE."""
    body = api.audit({"principal": principal, "host": host, "action": action, "since": since, "until": until,
                      "limit": limit})
    if as_json:
        echo_json(body)
        return
    echo_table(("TIME", "PRINCIPAL", "ACTION", "TARGETS", "OUTCOME", "MESSAGE"), [
        (e["time"][:19].replace("T", " "), e["principal"], e["action"],
         ",".join(e["targets"][:3]) + ("…" if len(e["targets"]) > 3 else ""),
         e["outcome"] if e["outcome"] == "ok" else f"{e['outcome']} ({e['status']})", e["message"])
        for e in body["entries"]])
