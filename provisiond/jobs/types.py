"""The job types provisiond accepts: an explicit allow-list, each with its
payload's rules. The agent checks the same list again before it runs
anything (:mod:`provisiond.agent.runners`).

``template`` exists on the server only: it is rendered here, per host, in
the kickstart composer's sandbox, and delivered as a ``file`` job. The
agent never renders anything, and a variable's value is never evaluated as
a template.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

from provisiond.agent import protocol
from provisiond.errors import ValidationError
from provisiond.inventory import fields

#: What an operator may ask for (``template`` is delivered as ``file``).
JOB_TYPES = (*protocol.JOB_TYPES, "template")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}\$?")
_MODE = re.compile(r"0?[0-7]{3,4}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_SCRIPT = 256 * 1024
MAX_TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class JobSpec:
    """A checked job: its type, payload, timeout and one line for people."""

    type: str
    payload: dict[str, Any]
    timeout_seconds: int
    summary: str

    @property
    def digest(self) -> str:
        return digest(self.type, self.payload)


def digest(kind: str, payload: dict[str, Any]) -> str:
    canonical = json.dumps({"type": kind, "payload": payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check(body: Any, default_timeout: int) -> JobSpec:
    """``{"type": ..., "payload": {...}, "timeout_seconds": n}`` checked, or a 400 naming the field."""
    if not isinstance(body, dict):
        raise ValidationError("job", "expected an object with type and payload")
    kind = body.get("type")
    if kind not in JOB_TYPES:
        raise ValidationError("type", f"{kind!r} is not a job type ({', '.join(JOB_TYPES)})")
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise ValidationError("payload", "expected an object")
    timeout = body.get("timeout_seconds", default_timeout)
    timeout = fields.integer(timeout, "timeout_seconds", 1, MAX_TIMEOUT)
    checked, summary = _CHECKS[kind](payload)
    return JobSpec(kind, checked, timeout, summary)


def _only(payload: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise ValidationError(f"payload.{unknown[0]}", f"unknown field (known: {', '.join(sorted(allowed))})")


def _script(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _only(payload, {"interpreter", "script", "args", "env", "user", "cwd", "success_codes"})
    interpreter = payload.get("interpreter", "sh")
    if interpreter not in protocol.SCRIPT_INTERPRETERS:
        raise ValidationError("payload.interpreter", f"{interpreter!r} is not one of "
                                                     f"{', '.join(protocol.SCRIPT_INTERPRETERS)}")
    script = payload.get("script")
    if not isinstance(script, str) or not script.strip():
        raise ValidationError("payload.script", "expected the script's text")
    if len(script.encode()) > MAX_SCRIPT:
        raise ValidationError("payload.script", f"longer than {MAX_SCRIPT} bytes")
    fields.proper_text(script, "payload.script")
    args = payload.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) and "\x00" not in a for a in args):
        raise ValidationError("payload.args", "expected a list of strings")
    env = payload.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str)
                                            and "\x00" not in v for k, v in env.items()):
        raise ValidationError("payload.env", "expected a mapping of variable names to strings")
    user = payload.get("user")
    if user is not None and (not isinstance(user, str) or not _USER.fullmatch(user)):
        raise ValidationError("payload.user", f"{user!r} is not a user name")
    cwd = payload.get("cwd")
    if cwd is not None and not protocol.valid_destination(cwd) and cwd != "/":
        raise ValidationError("payload.cwd", "expected an absolute path without '..'")
    codes = payload.get("success_codes", [0])
    if not isinstance(codes, list) or not codes or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes):
        raise ValidationError("payload.success_codes", "expected a non-empty list of exit codes (0-255)")
    first = script.strip().splitlines()[0]
    summary = f"{interpreter}: {first[:100]}" + (" …" if len(first) > 100 or "\n" in script.strip() else "")
    return ({"interpreter": interpreter, "script": script, "args": args, "env": env, "user": user, "cwd": cwd,
             "success_codes": codes}, summary + (" " + shlex.join(args) if args else ""))


def _service(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _only(payload, {"action", "unit"})
    action, unit = payload.get("action"), payload.get("unit")
    if action not in protocol.SERVICE_ACTIONS:
        raise ValidationError("payload.action", f"{action!r} is not one of {', '.join(protocol.SERVICE_ACTIONS)}")
    if isinstance(unit, str) and "." not in unit:
        unit += ".service"
    if not isinstance(unit, str) or unit.startswith("-") or not protocol.UNIT_NAME.fullmatch(unit):
        raise ValidationError("payload.unit", f"{unit!r} is not a systemd unit name")
    return {"action": action, "unit": unit}, f"service: systemctl {action} {unit}"


def _destination(payload: dict[str, Any]) -> dict[str, Any]:
    dest = payload.get("dest")
    if not isinstance(dest, str) or not protocol.valid_destination(dest):
        raise ValidationError("payload.dest", f"{dest!r} is not an absolute path without '..'")
    mode = str(payload.get("mode", "0644"))
    if not _MODE.fullmatch(mode):
        raise ValidationError("payload.mode", f"{mode!r} is not an octal file mode (0644)")
    owner, group = payload.get("owner"), payload.get("group")
    for name, value in (("owner", owner), ("group", group)):
        if value is not None and (not isinstance(value, str) or not _USER.fullmatch(value)):
            raise ValidationError(f"payload.{name}", f"{value!r} is not a user or group name")
    return {"dest": dest, "mode": mode.rjust(4, "0"), "owner": owner, "group": group}


def _file(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _only(payload, {"file", "dest", "mode", "owner", "group"})
    name = fields.name(payload.get("file"), "payload.file", 128)
    where = _destination(payload)
    return {"file": name, **where}, f"file: {name} → {where['dest']}"


def _template(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _only(payload, {"file", "dest", "mode", "owner", "group", "variables"})
    name = fields.name(payload.get("file"), "payload.file", 128)
    variables = fields.variables(payload.get("variables") or {}, "payload.variables")
    where = _destination(payload)
    return {"file": name, "variables": variables, **where}, f"template: {name} → {where['dest']}"


def _facts(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    _only(payload, set())
    return {}, "facts"


_CHECKS = {"script": _script, "service": _service, "file": _file, "template": _template, "facts": _facts}
