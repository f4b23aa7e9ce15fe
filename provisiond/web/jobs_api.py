"""The admin API of agents, jobs and the file store (``/api/v1``): thin
callers of :mod:`provisiond.actions.agents` and :mod:`provisiond.actions.jobs`."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from provisiond.actions import agents as agent_actions
from provisiond.actions import jobs as job_actions
from provisiond.actions.principal import Role
from provisiond.errors import ValidationError
from provisiond.web import services
from provisiond.web.auth import needs, principal
from provisiond.web.bodies import flag, json_body, only_fields, raw_body

bp = Blueprint("jobs", __name__, url_prefix="/api/v1")


# --------------------------------------------------------------------------- agents


@bp.get("/agents")
@needs(Role.VIEWER)
def list_agents() -> Response:
    return jsonify({"agents": agent_actions.listing(services(), principal(), request.args.get("state"))})


@bp.post("/agents/<int:agent_id>/accept")
@needs(Role.OPERATOR)
def accept_agent(agent_id: int) -> Response:
    body = json_body(required=False)
    only_fields(body, {"host"})
    host = body.get("host")
    if host is not None and not isinstance(host, str):
        raise ValidationError("host", "expected a serial number")
    return jsonify(agent_actions.accept(services(), principal(), agent_id, host))


@bp.post("/agents/<int:agent_id>/reject")
@needs(Role.OPERATOR)
def reject_agent(agent_id: int) -> Response:
    agent_actions.reject(services(), principal(), agent_id)
    return jsonify({"agent_id": agent_id, "state": "rejected"})


@bp.delete("/agents/<int:agent_id>")
@needs(Role.OPERATOR)
def delete_agent(agent_id: int) -> tuple[str, int]:
    agent_actions.delete(services(), principal(), agent_id)
    return "", 204


@bp.get("/hosts/<serial>/facts")
@needs(Role.VIEWER)
def host_facts(serial: str) -> Response:
    return jsonify(agent_actions.host_facts(services(), principal(), serial))


@bp.post("/hosts/<serial>/handoff/retry")
@needs(Role.OPERATOR)
def retry_handoff(serial: str) -> Response:
    job_actions.handoff_retry(services(), principal(), serial)
    return jsonify({"host": serial, "handoff": "started again"})


# --------------------------------------------------------------------------- jobs


@bp.post("/jobs")
@needs(Role.OPERATOR)
def submit_job() -> tuple[Response, int]:
    return jsonify(job_actions.submit(services(), principal(), json_body())), 201


@bp.get("/jobs")
@needs(Role.VIEWER)
def list_jobs() -> Response:
    limit = request.args.get("limit", "50")
    if not limit.isdigit() or not 1 <= int(limit) <= job_actions.MAX_LISTED:
        raise ValidationError("limit", f"expected 1 to {job_actions.MAX_LISTED}")
    return jsonify({"jobs": job_actions.listing(services(), principal(), int(limit))})


@bp.get("/jobs/<int:job_id>")
@needs(Role.VIEWER)
def show_job(job_id: int) -> Response:
    output = request.args.get("output", "").lower() in ("1", "true", "yes")
    return jsonify(job_actions.show(services(), principal(), job_id, output, request.args.get("state") or None))


@bp.post("/jobs/<int:job_id>/cancel")
@needs(Role.OPERATOR)
def cancel_job(job_id: int) -> Response:
    return jsonify(job_actions.cancel(services(), principal(), job_id))


@bp.post("/jobs/<int:job_id>/rerun")
@needs(Role.OPERATOR)
def rerun_job(job_id: int) -> tuple[Response, int]:
    body = json_body(required=False)
    only_fields(body, {"failed"})
    return jsonify(job_actions.rerun(services(), principal(), job_id, flag(body, "failed"))), 201


# --------------------------------------------------------------------------- files


@bp.get("/files")
@needs(Role.VIEWER)
def list_files() -> Response:
    return jsonify({"files": job_actions.list_files(services(), principal())})


@bp.put("/files/<name>")
@needs(Role.OPERATOR)
def put_file(name: str) -> tuple[Response, int]:
    replace = request.args.get("replace", "").lower() in ("1", "true", "yes")
    return jsonify(job_actions.put_file(services(), principal(), name, raw_body(), replace)), 201


@bp.delete("/files/<name>")
@needs(Role.OPERATOR)
def remove_file(name: str) -> tuple[str, int]:
    job_actions.remove_file(services(), principal(), name)
    return "", 204
