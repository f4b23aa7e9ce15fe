"""Out-of-band control in provctl: ``power`` and ``bootdev``.

The server queues each operation and a worker carries it out (the API
answers 202 at once); provctl polls the operation until it ends and prints
what the BMC answered. ``--no-wait`` prints the operation id instead. A
failed operation exits 10 with the BMC and the reason.
"""

from __future__ import annotations

import time
from typing import Any

import click

from provisiond.cli.client import ApiClient, PowerFailed, WaitTimedOut, pass_api
from provisiond.cli.output import echo_json, json_option

#: Seconds between two polls of an operation.
POLL_SECONDS = 0.2
FINISHED = ("done", "failed")

wait_options = [
    click.option("--no-wait", is_flag=True, help="Queue the operation and return its id."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=120.0, show_default=True,
                 metavar="SECONDS", help="Stop waiting after SECONDS (exit 9); the operation goes on."),
    json_option,
]


def _with_wait_options(command: Any) -> Any:
    for option in reversed(wait_options):
        command = option(command)
    return command


def wait_for_operation(api: ApiClient, operation: dict[str, Any], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while operation["status"] not in FINISHED:
        if time.monotonic() >= deadline:
            raise WaitTimedOut(f"operation {operation['id']} ({operation['description']}) is still "
                               f"{operation['status']} after {timeout:g} s; it goes on "
                               f"(GET /api/v1/power/{operation['id']})")
        time.sleep(POLL_SECONDS)
        operation = api.power_operation(int(operation["id"]))
    return operation


def finish(api: ApiClient, serial: str, operation: dict[str, Any], no_wait: bool, timeout: float,
           as_json: bool) -> None:
    if no_wait:
        if as_json:
            echo_json(operation)
        else:
            click.echo(f"queued operation {operation['id']} on {serial}: {operation['description']}")
        return
    operation = wait_for_operation(api, operation, timeout)
    if as_json:
        echo_json(operation)
    if operation["status"] == "failed":
        raise PowerFailed(str(operation["message"]))
    if not as_json:
        click.echo(f"{serial}: {operation['result']}")


@click.command("power")
@click.argument("serial")
@click.argument("action", type=click.Choice(["on", "off", "reset", "status", "netboot"]))
@_with_wait_options
@pass_api
def power(api: ApiClient, serial: str, action: str, no_wait: bool, timeout: float, as_json: bool) -> None:
    """Power SERIAL on, off, reset it, or show its power state, through its BMC.

    "on" of a machine that is on (and "off" of one that is off) succeeds
    without a command; "reset" of a machine that is off powers it on;
    "netboot" boots it from the network once (boot device PXE for the next
    boot, then reset). Wake-on-LAN hosts can only be powered on.

    \b
    provctl power 712DM2Y status
    provctl power 712DM2Y reset
    """
    finish(api, serial, api.power(serial, action), no_wait, timeout, as_json)


@click.command("bootdev")
@click.argument("serial")
@click.argument("device", type=click.Choice(["pxe", "disk", "status"]))
@click.option("--persistent", is_flag=True, help="For every boot from now on (default: the next boot only).")
@_with_wait_options
@pass_api
def bootdev(api: ApiClient, serial: str, device: str, persistent: bool, no_wait: bool, timeout: float,
            as_json: bool) -> None:
    """Set the boot device of SERIAL (pxe or disk), or show it (status).

    \b
    provctl bootdev 712DM2Y pxe
    provctl bootdev 712DM2Y disk --persistent
    """
    finish(api, serial, api.bootdev(serial, device, persistent), no_wait, timeout, as_json)
