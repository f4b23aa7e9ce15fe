"""The agent protocol: what ``provisiond-agent`` and provisiond say to each
other. Standard library only (the agent imports it on Python 3.9).

The agent dials out over HTTPS; provisiond never connects to a host. All
bodies are JSON (``Content-Type: application/json``); every error is
``{"error": code, "message": text}`` with its HTTP status.

Identity and credential
-----------------------
The agent makes its own credential once: ``CREDENTIAL_PREFIX`` + 43
url-safe random characters (``secrets.token_urlsafe(32)``), kept in
``state_dir/credential`` with mode 0600. The server keeps only its SHA-256.
Every call but ``enroll`` carries ``Authorization: Bearer <credential>``.

``POST ENROLL``  body ``{"credential", "ticket" (optional), "hostname",
"machine_id", "serial", "version"}``:

* 201 ``{"agent_id", "state": "accepted", "host": serial}``: a valid
  one-time enrollment ticket (from the install's ``%post``) accepts the
  agent at once and hands the host off (INSTALLED → HANDED_OFF).
* 202 ``{"agent_id", "state": "pending"}``: no ticket; an operator accepts
  or rejects it (``provctl agents accept ID``), as ``salt-key`` does.
* 200: the same credential enrolling again (idempotent) answers its state.
* 403 ``{"error": "agent_denied"}``: the identity (machine id or serial)
  belongs to an accepted agent with another credential (a rebuilt host):
  recorded as ``denied`` for the operator to see.
* 400/404/409/410: a bad body; an unknown, used or expired ticket (410
  ``ticket_expired`` / ``ticket_used``).

``POST POLL`` (long-poll) body ``{"wait": seconds (0-POLL_MAX_WAIT)}``:
answers at once with the runs waiting for this agent, or after up to
``wait`` seconds with none: 200 ``{"runs": [RUN...], "server_time",
"poll_after": seconds}``. Each poll is a heartbeat. A pending agent gets
403 ``agent_pending`` (poll again after ``poll_after`` in the body), a
rejected, denied or revoked one 403 ``agent_rejected``/``agent_denied``/
``agent_revoked`` (stop). 429/503 with ``Retry-After``: come back later
(admission control while many agents reconnect).

A RUN is ``{"run_id", "job_id", "type", "payload", "timeout_seconds",
"lease_seconds", "attempt"}``. Delivery is at least once: a run whose
result has not arrived when its lease ends is delivered again (until the
job's deadline). The agent keeps the ids of the runs it finished (with
their results, until uploaded) and never runs one twice: a re-delivered
run it has finished gets its stored result again.

``POST RESULT`` (``/agent/v1/runs/<run_id>/result``) body ``{"key":
idempotency key (the agent's: uuid4 hex, one per run), "status": one of
RESULT_STATUSES, "exit_code", "output", "output_truncated", "error",
"started_at", "finished_at"}``: 200 ``{"recorded": true}``; the same key
again 200 ``{"recorded": false}`` (already recorded); another key for a run
that has its result, or a run of another agent: 409 / 404, nothing changed.

Jobs
----
``JOB_TYPES`` is the allow-list, checked by the server when a job is made
and by the agent before it runs one (an unknown type is answered with a
``failed`` result, error ``unknown job type``). Payloads:

* ``script``: ``{"interpreter": "sh"|"python", "script": text, "args":
  [str], "env": {str: str}, "user": name or null, "cwd": absolute path or
  null, "success_codes": [int] (default [0])}``.
* ``service``: ``{"action": one of SERVICE_ACTIONS, "unit": name}``:
  ``systemctl ACTION UNIT``.
* ``file``: ``{"dest": absolute path without "..", "content_b64",
  "sha256", "mode": "0644", "owner": name or null, "group": name or null}``:
  skipped (status succeeded, output "unchanged") when the target already
  has that checksum; else written to a temporary file beside it, fsynced,
  renamed over it, and its checksum read back and verified.
* ``facts``: ``{}``: answers ``output`` = JSON of the host's facts.
"""

from __future__ import annotations

import re

API_PREFIX = "/agent/v1"
ENROLL = API_PREFIX + "/enroll"
POLL = API_PREFIX + "/poll"
RESULT = API_PREFIX + "/runs/{run_id}/result"
#: Public: the agent program (a zipapp) and its checksum, and the CA.
DOWNLOAD = API_PREFIX + "/provisiond-agent.pyz"
DOWNLOAD_SHA256 = API_PREFIX + "/provisiond-agent.pyz.sha256"
CA_CERT = API_PREFIX + "/ca.pem"

CREDENTIAL_PREFIX = "pva_"
#: The longest long-poll a server holds, in seconds.
POLL_MAX_WAIT = 60

JOB_TYPES = ("script", "service", "file", "facts")
SCRIPT_INTERPRETERS = ("sh", "python")
SERVICE_ACTIONS = ("start", "stop", "restart", "reload", "enable", "disable", "status")
RESULT_STATUSES = ("succeeded", "failed", "timed_out")
#: systemd unit names: letters, digits and ``:-_.@\\``, with a suffix.
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@\\-]{1,200}\.(service|socket|timer|target|mount|path)")
#: Longest output an agent uploads (the server caps again by its setting).
OUTPUT_LIMIT = 1024 * 1024


def valid_destination(path: str) -> bool:
    """An absolute path with no ``..`` component, no NUL and no empty name."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path or len(path) > 4096:
        return False
    parts = path.split("/")[1:]
    return bool(parts) and all(part not in ("", ".", "..") for part in parts)
