"""What provctl prints, and the exit status it ends with.

Readable output is a table (lists) or YAML (one object); ``--json`` prints
the server's JSON instead. :func:`exit_status` is the one place that maps
an error to an exit status; :func:`report` prints it as ``provctl: ...``
on stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum
from typing import Any, TypeVar

import click
import yaml

from provisiond.cli.client import (
    CheckFailed,
    ClientError,
    ConfigurationError,
    Conflict,
    Forbidden,
    InstallFailed,
    InvalidInput,
    JobFailed,
    JobNotRun,
    MissingToken,
    NotFound,
    PowerFailed,
    Unauthorized,
    Unreachable,
    WaitTimedOut,
)

F = TypeVar("F", bound=Callable[..., Any])


class ExitStatus(IntEnum):
    """provctl's exit statuses (listed in ``provctl --help``)."""

    OK = 0
    ERROR = 1  # server error or an unexpected answer
    USAGE = 2  # click's own usage errors, a bad --url or config file
    NOT_FOUND = 3  # 404
    CONFLICT = 4  # 409: duplicate value, protected host, group still in use
    INVALID = 5  # 400/413: the server rejected the input
    UNAUTHORIZED = 6  # 401: no token, or a bad one
    UNREACHABLE = 7  # connection refused, DNS failure, timeout
    INSTALL_FAILED = 8  # the install being followed ended with the host FAILED
    TIMED_OUT = 9  # --timeout passed before the install being followed finished
    POWER_FAILED = 10  # the BMC operation failed (unreachable, refused, unsupported)
    CHECK_FAILED = 11  # profiles check: some host's kickstart does not render, or a profile lacks a declaration
    JOB_FAILED = 12  # the job followed failed or timed out on some host
    JOB_NOT_RUN = 13  # the job followed did not run on some host (no agent, offline, cancelled); none failed


#: Most specific first; anything else is ERROR.
_EXIT_STATUSES: tuple[tuple[type[ClientError], ExitStatus], ...] = (
    (NotFound, ExitStatus.NOT_FOUND),
    (Conflict, ExitStatus.CONFLICT),
    (InvalidInput, ExitStatus.INVALID),
    (Unauthorized, ExitStatus.UNAUTHORIZED),
    (Forbidden, ExitStatus.UNAUTHORIZED),
    (MissingToken, ExitStatus.UNAUTHORIZED),
    (Unreachable, ExitStatus.UNREACHABLE),
    (ConfigurationError, ExitStatus.USAGE),
    (InstallFailed, ExitStatus.INSTALL_FAILED),
    (WaitTimedOut, ExitStatus.TIMED_OUT),
    (PowerFailed, ExitStatus.POWER_FAILED),
    (CheckFailed, ExitStatus.CHECK_FAILED),
    (JobFailed, ExitStatus.JOB_FAILED),
    (JobNotRun, ExitStatus.JOB_NOT_RUN),
)


def exit_status(error: ClientError) -> ExitStatus:
    for kind, status in _EXIT_STATUSES:
        if isinstance(error, kind):
            return status
    return ExitStatus.ERROR


def report(error: ClientError) -> ExitStatus:
    """Print ``provctl: <message>`` on stderr; return the exit status to end with."""
    click.echo(f"provctl: {error.message}", err=True)
    return exit_status(error)


# --------------------------------------------------------------------------- output


def json_option(command: F) -> F:
    """``--json``: print the server's JSON instead of a table or text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the raw JSON from the server instead of readable text.")(command)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def echo_yaml(data: Any) -> None:
    click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True), nl=False)


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], err: bool = False) -> None:
    """Columns padded to their widest cell; an empty cell shows as ``-``."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip(), err=err)


def echo_fields(fields: Sequence[tuple[str, Any]], err: bool = False) -> None:
    """``label  value`` lines, the values aligned; an empty value shows as ``-``."""
    width = max((len(label) for label, _ in fields), default=0)
    for label, value in fields:
        click.echo(f"{label.ljust(width)}  {_cell(value)}".rstrip(), err=err)


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def compact(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without empty values (``None``, ``[]``, ``{}``), one level deep too."""
    result: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v not in (None, [], {})}
        if value not in (None, [], {}):
            result[key] = value
    return result
