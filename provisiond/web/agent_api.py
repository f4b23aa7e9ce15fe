"""The agent endpoints (``/agent/v1``, see :mod:`provisiond.agent.protocol`).

Enrollment, polls and results answer only over HTTPS (the agent gateway,
``provisiond gateway``): elsewhere they are a 404, so an agent's credential
never crosses the network in clear. The agent program, its checksum and the
CA certificate are public and served on every listener: an install's
``%post`` fetches them over the provisioning network's HTTP.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, send_file

from provisiond.actions import agents as agent_actions
from provisiond.errors import NotFound
from provisiond.web import services
from provisiond.web.auth import self_authenticating
from provisiond.web.bodies import json_body

bp = Blueprint("agent", __name__, url_prefix="/agent/v1")
#: Small bodies only: results are capped by the agent at 1 MiB of output.
_LIMIT = 4 * 1024 * 1024


def _over_tls() -> None:
    if not request.is_secure:
        raise NotFound("not found")


@bp.post("/enroll")
@self_authenticating
def enroll() -> Response:
    _over_tls()
    enrolled = agent_actions.enroll(services(), json_body(64 * 1024), request.remote_addr)
    response = jsonify(enrolled.body)
    response.status_code = enrolled.status
    return response


@bp.post("/poll")
@self_authenticating
def poll() -> Response:
    _over_tls()
    svc = services()
    agent = agent_actions.authenticate(svc, request.headers.get("Authorization", ""))
    body = json_body(64 * 1024, required=False)
    return jsonify(agent_actions.poll(svc, agent, body.get("wait", 0), request.remote_addr))


@bp.post("/runs/<int:run_id>/result")
@self_authenticating
def result(run_id: int) -> Response:
    _over_tls()
    svc = services()
    agent = agent_actions.authenticate(svc, request.headers.get("Authorization", ""))
    return jsonify(agent_actions.result(svc, agent, run_id, json_body(_LIMIT)))


@bp.get("/provisiond-agent.pyz")
def download() -> Response:
    bundle = services().agent_bundle
    sha256 = bundle.sha256
    response = send_file(bundle.path, mimetype="application/zip", download_name="provisiond-agent.pyz")
    response.headers["X-Checksum-Sha256"] = sha256
    return response


@bp.get("/provisiond-agent.pyz.sha256")
def download_sha256() -> Response:
    return Response(f"{services().agent_bundle.sha256}  provisiond-agent.pyz\n", mimetype="text/plain")


@bp.get("/provisiond-agent.service")
def unit() -> Response:
    return Response(services().agent_bundle.unit + "\n", mimetype="text/plain")


@bp.get("/ca.pem")
def ca_certificate() -> Response:
    from provisiond import tls

    files = tls.ensure(services().settings)
    return send_file(files.ca_cert, mimetype="application/x-pem-file", download_name="ca.pem")
