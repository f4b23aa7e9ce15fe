"""The OpenAPI 3.1 document of the admin API, served at ``/api/v1/openapi.json``.

A test checks it against the Flask URL map in both directions, so a route
cannot be added or removed without its entry here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from provisiond import __version__

_ERROR = {"$ref": "#/components/responses/Error"}


def _op(summary: str, ok: str = "200", body: str | None = None, params: tuple[str, ...] = (),
        public: bool = False, content: str = "application/json") -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {ok: {"description": "success", "content": {content: {}}} if ok != "204"
                      else {"description": "done"},
                      "4XX": _ERROR, "5XX": _ERROR},
    }
    if params:
        op["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body:
        op["requestBody"] = {"required": True, "content": {body: {}}}
    if public:
        op["security"] = []
    return op


_BOOT_FILE = _op("A kernel, initrd or stage file from the boot root (public; conditional and Range requests)",
                 params=("bootfile",), public=True, content="application/octet-stream")
_BOOT_FILE["responses"].update({
    "206": {"description": "the requested byte range", "content": {"application/octet-stream": {}}},
    "304": {"description": "not modified (If-None-Match / If-Modified-Since)"},
})

PATHS: dict[str, dict[str, dict[str, Any]]] = {
    "/api/v1/openapi.json": {"get": _op("This document", public=True)},
    "/api/v1/hosts": {
        "get": _op("List hosts (filters: group, profile, state, site, rack, owner, q; limit, offset)",
                   params=("group", "profile", "state", "site", "rack", "owner", "q", "limit", "offset")),
        "post": _op("Add a host", ok="201", body="application/json"),
    },
    "/api/v1/hosts/{serial}": {
        "get": _op("Show a host (never its BMC password)", params=("serial",)),
        "put": _op("Replace a host's record", body="application/json", params=("serial",)),
        "patch": _op("Change some fields of a host: a JSON Merge Patch (RFC 7396) of its document; mappings "
                     "merge, null clears, macs replaces nics", body="application/json", params=("serial",)),
        "delete": _op("Remove a host (protected hosts need force=true)", ok="204", params=("serial", "force")),
    },
    "/api/v1/hosts/{serial}/kickstart": {
        "get": _op("The composed kickstart (preview token)", params=("serial", "var"), content="text/plain"),
    },
    "/api/v1/hosts/{serial}/variables": {
        "get": _op("The host's merged template variables", params=("serial", "var")),
    },
    "/api/v1/import/hosts": {
        "post": _op("Upsert hosts from YAML, JSON or CSV, all or nothing", body="text/csv",
                    params=("format", "filename")),
    },
    "/api/v1/export/hosts": {
        "get": _op("Export the data source", params=("exportformat",), content="application/yaml"),
    },
    "/api/v1/groups": {
        "get": _op("List groups"),
        "post": _op("Add a group", ok="201", body="application/json"),
    },
    "/api/v1/groups/{name}": {
        "get": _op("Show a group", params=("name",)),
        "patch": _op("Change a group: a JSON Merge Patch (RFC 7396)", body="application/json", params=("name",)),
        "delete": _op("Remove an empty group", ok="204", params=("name",)),
    },
    "/api/v1/profiles": {"get": _op("List install profiles")},
    "/api/v1/profiles/{name}": {"get": _op("Show a resolved profile", params=("name",))},
    "/api/v1/checks/profiles": {"get": _op("Render every host's kickstart and check every profile declares the "
                                           "variables its fragments use: failures and problems listed")},
    "/api/v1/hosts/{serial}/install": {
        "post": _op("Arm an install (body: {force: bool, power: bool}); protected or in-service hosts need "
                    "force; power queues boot device PXE (next boot) + reset on the host's BMC",
                    ok="201", body="application/json", params=("serial",)),
        "get": _op("The host's current or latest install (never its token)", params=("serial",)),
    },
    "/api/v1/hosts/{serial}/cancel": {"post": _op("Cancel the host's install (FAILED: cancelled)",
                                                  params=("serial",))},
    "/api/v1/hosts/{serial}/events": {"get": _op("The host's timeline after the cursor `after` (or event id "
                                                 "`since`); `cursor` in the answer reads on",
                                                 params=("serial", "after", "since", "limit"))},
    "/api/v1/events": {"get": _op("Every host's timeline after the cursor `after`: one `serial` (deleted hosts' "
                                  "too), some `kind`s", params=("after", "serialq", "kind", "limit"))},
    "/api/v1/installs": {
        "post": _op("Arm many hosts, all or none (body: {serials: [...], force, power, pace_seconds}); "
                    "power-ons are paced", ok="201", body="application/json"),
    },
    "/api/v1/hosts/{serial}/power": {
        "post": _op("Queue a power operation (body: {action: on|off|reset|status}); 202 with the operation "
                    "to poll", ok="202", body="application/json", params=("serial",)),
        "get": _op("The host's latest power operations, newest first", params=("serial",)),
    },
    "/api/v1/hosts/{serial}/bootdev": {
        "post": _op("Queue a boot device operation (body: {device: pxe|disk|status, persistent: bool}); 202",
                    ok="202", body="application/json", params=("serial",)),
    },
    "/api/v1/power/{operation_id}": {
        "get": _op("One power operation: queued, running, done (with the BMC's answer) or failed (why)",
                   params=("operation_id",)),
    },
    "/api/v1/queue": {"get": _op("The install caps, hosts installing, and waiting hosts in order")},
    "/api/v1/tokens": {
        "get": _op("API credentials (admin): name, role, state, expiry; never the token"),
        "post": _op("Create a credential (admin; body: {name, role, expires}); the token is in this answer only",
                    ok="201", body="application/json"),
    },
    "/api/v1/tokens/{name}": {"delete": _op("Revoke a credential (admin)", ok="204", params=("name",))},
    "/api/v1/audit": {"get": _op("The audit trail, newest first", params=(
        "principal", "host", "action", "auditsince", "until", "limit", "before"))},
    "/api/v1/status": {"get": _op("Hosts per install state, the cap and slots in use")},
    "/api/v1/agents": {"get": _op("Agents: pending, accepted, rejected, denied, revoked; online or not",
                                  params=("agentstate",))},
    "/api/v1/agents/{agent_id}/accept": {"post": _op("Accept an agent for its host (body: {host: SN} when its "
                                                     "serial number is no host's)", body="application/json",
                                                     params=("agent_id",))},
    "/api/v1/agents/{agent_id}/reject": {"post": _op("Reject an agent", params=("agent_id",))},
    "/api/v1/agents/{agent_id}": {"delete": _op("Forget an agent: its credential is refused from now on",
                                                ok="204", params=("agent_id",))},
    "/api/v1/hosts/{serial}/facts": {"get": _op("The facts the host's agent reported", params=("serial",))},
    "/api/v1/hosts/{serial}/handoff/retry": {"post": _op("Run a handed-off host's hand-off jobs again",
                                                         params=("serial",))},
    "/api/v1/jobs": {
        "post": _op("Run a job (body: {type: script|service|file|template|facts, payload, timeout_seconds, "
                    "targets: [serial | hostname glob | group | all]})", ok="201", body="application/json"),
        "get": _op("Jobs, newest first, with their runs' states counted", params=("limit",)),
    },
    "/api/v1/jobs/{job_id}": {"get": _op("A job and each host's run (with output=true, their output)",
                                         params=("job_id", "output", "runstate"))},
    "/api/v1/jobs/{job_id}/cancel": {"post": _op("Cancel a job's runs that have not ended", params=("job_id",))},
    "/api/v1/jobs/{job_id}/rerun": {"post": _op("The same job again (body: {failed: true}: only on hosts whose "
                                                "run did not succeed)", ok="201", body="application/json",
                                                params=("job_id",))},
    "/api/v1/files": {"get": _op("The file store: names, sizes, checksums")},
    "/api/v1/files/{name}": {
        "put": _op("Store a file (the body; replace=true to replace one)", ok="201",
                   body="application/octet-stream", params=("filename_path", "replace")),
        "delete": _op("Remove a stored file", ok="204", params=("filename_path",)),
    },
    "/boot/{name}": {"get": _BOOT_FILE},
    "/boot/ipxe/{mac}": {"get": _op("The iPXE boot script for a MAC: installer for an armed host, else exit "
                                    "(public; firmware has no credential)", params=("mac",), public=True,
                                    content="text/plain")},
}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


PARAMETERS: dict[str, dict[str, Any]] = {
    "serial": _path("serial", "the host's serial number"),
    "operation_id": _path("operation_id", "a power operation's id"),
    "name": _path("name", "the group's or profile's name"),
    "bootfile": _path("name", "the file's path under the boot root (may contain '/')"),
    "group": _query("group", "only hosts in this group"),
    "profile": _query("profile", "only hosts with this profile"),
    "state": _query("state", "only hosts in this install state"),
    "site": _query("site", "only hosts at this site"),
    "rack": _query("rack", "only hosts in this rack"),
    "owner": _query("owner", "only hosts of this owner"),
    "q": _query("q", "substring of the serial number, host name, IP address or a MAC"),
    "limit": _query("limit", "at most this many", {"type": "integer", "minimum": 1}),
    "offset": _query("offset", "skip this many", {"type": "integer", "minimum": 0}),
    "mac": _path("mac", "a MAC address (any common spelling)"),
    "since": _query("since", "only events with a larger id", {"type": "integer", "minimum": 0}),
    "after": _query("after", "only events after this cursor (TXID:ID, from an earlier answer)"),
    "serialq": _query("serial", "only events of the host with this serial number"),
    "kind": _query("kind", "only events of this kind (repeatable)"),
    "force": _query("force", "true to act on a protected host", {"type": "boolean"}),
    "var": _query("var", "one-off variable name=value (repeatable)"),
    "format": _query("format", "yaml, json or csv (default: from Content-Type or filename)"),
    "exportformat": _query("format", "yaml (default) or csv", {"enum": ["yaml", "csv"]}),
    "filename": _query("filename", "the file name used in error messages"),
    "principal": _query("principal", "who acted, as the trail names them (token ops)"),
    "host": _query("host", "a serial number the action was about"),
    "action": _query("action", "hosts.edit, installs.arm, ..."),
    "auditsince": _query("since", "from this time (ISO 8601)"),
    "until": _query("until", "before this time (ISO 8601)"),
    "before": _query("before", "entries older than this entry id", {"type": "integer", "minimum": 1}),
    "agent_id": _path("agent_id", "an agent's id"),
    "agentstate": _query("state", "only agents in this state"),
    "job_id": _path("job_id", "a job's id"),
    "output": _query("output", "true to include each host's output", {"type": "boolean"}),
    "runstate": _query("state", "only runs in this state"),
    "filename_path": _path("name", "the stored file's name"),
    "replace": _query("replace", "true to replace a stored file of that name", {"type": "boolean"}),
}


@lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "provisiond admin API", "version": __version__},
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": PARAMETERS,
            "responses": {
                "Error": {
                    "description": "an error",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["error", "message"],
                        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                    }}},
                }
            },
        },
    }
