"""``provctl``: the command-line client of provisiond's admin API.

One module per command group (:mod:`~provisiond.cli.hosts`,
:mod:`~provisiond.cli.groups`, :mod:`~provisiond.cli.profiles`) or set of
commands (:mod:`~provisiond.cli.install`: install, cancel, log, status,
queue), each registered here. The context object is a
:class:`~provisiond.cli.client.Connection` that builds the
:class:`~provisiond.cli.client.ApiClient` on first use.
"""

from __future__ import annotations

from typing import Any

import click

from provisiond import __version__

from provisiond.cli.audit import audit
from provisiond.cli.client import DEFAULT_CONFIG, DEFAULT_URL, ClientError, Connection
from provisiond.cli.groups import groups
from provisiond.cli.hosts import hosts
from provisiond.cli.install import cancel, install, log, queue, status
from provisiond.cli.jobs import agents, facts, files, handoff, jobs, push, run, service, template
from provisiond.cli.output import report
from provisiond.cli.power import bootdev, power
from provisiond.cli.profiles import profiles


class ProvctlGroup(click.Group):
    """Turns every :class:`ClientError` into ``provctl: <message>`` on stderr
    and its exit status; never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClientError as error:
            ctx.exit(report(error))


@click.group("provctl", cls=ProvctlGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--url", envvar="PROVISIOND_URL", metavar="URL",
              help=f"provisiond server (env PROVISIOND_URL; default {DEFAULT_URL}).")
@click.option("--token", envvar="PROVISIOND_TOKEN", metavar="TOKEN",
              help="Admin API token (env PROVISIOND_TOKEN).")
@click.option("--config", "config_file", envvar="PROVCTL_CONFIG", metavar="FILE",
              help=f"YAML file with url: and token: (env PROVCTL_CONFIG; default {DEFAULT_CONFIG}).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds to wait for the server.")
@click.version_option(__version__, prog_name="provctl")
@click.pass_context
def main(ctx: click.Context, url: str | None, token: str | None, config_file: str | None, timeout: float) -> None:
    """provctl: manage provisiond's hosts, groups, profiles and installs.

    The server and token come from --url/--token, else PROVISIOND_URL and
    PROVISIOND_TOKEN, else the config file, else http://127.0.0.1:8080.
    Create a token on the server with `provisiond tokens create NAME`;
    `provisiond demo` writes the config file for you. Every command takes
    --json to print the server's JSON instead of a table or text.

    \b
    Exit status:
      0  ok
      1  error: server error or an unexpected answer
      2  usage: bad command line, --url or config file
      3  not found
      4  conflict: duplicate value, protected host, group in use
      5  invalid: the server rejected the input (the field is named)
      6  unauthorized: no token, a bad one, or one whose role may not do this
      7  unreachable: cannot reach the server (refused, no such name, timeout)
      8  install failed: the install being followed ended failed (the reason is printed)
      9  timed out waiting: --timeout passed before the install ended (it goes on)
     10  power failed: the BMC operation failed (unreachable, refused, unsupported)
     11  check failed: profiles check found a host whose kickstart does not render
     12  job failed: the job followed failed or timed out on some host
     13  job not run: the job followed did not run on some host (no agent, offline, cancelled)
    """
    connection = Connection(url=url, token=token, config_file=config_file, timeout=timeout)
    ctx.obj = connection
    ctx.call_on_close(connection.close)


main.add_command(hosts)
main.add_command(groups)
main.add_command(profiles)
for command in (install, cancel, log, status, queue, power, bootdev, audit, run, push, template, service, facts,
                jobs, agents, files, handoff):
    main.add_command(command)


if __name__ == "__main__":
    main(prog_name="provctl")
