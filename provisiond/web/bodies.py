"""Reading request bodies: size-bounded, UTF-8, JSON objects, clear 4xx errors."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from provisiond.errors import BadRequest, PayloadTooLarge, ValidationError


def raw_body(limit: int | None = None) -> bytes:
    """The body, refusing more than ``limit`` bytes with 413 (chunked bodies too)."""
    if limit is not None:
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit} are accepted")
        data = request.stream.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return data
    return request.get_data(cache=True)


def json_body(limit: int | None = None, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    raw = raw_body(limit)
    if not raw.strip():
        if not required:
            return {}
        raise BadRequest("the request needs a JSON object body")
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def only_fields(body: dict[str, Any], known: set[str]) -> None:
    """400 naming the first field the endpoint does not take."""
    unknown = set(body) - known
    if unknown:
        raise ValidationError(sorted(unknown)[0], f"unknown field (known: {', '.join(sorted(known))})")


def flag(body: dict[str, Any], name: str) -> bool:
    """An optional true/false field (absent: false)."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValidationError(name, "expected true or false")
    return value
