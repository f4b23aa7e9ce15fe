"""Reading request bodies: size-bounded, UTF-8, JSON objects, clear 4xx errors."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from provisiond.errors import BadRequest, PayloadTooLarge, ValidationError
from provisiond.inventory import fields


def raw_body(limit: int | None = None) -> bytes:
    """The body, refusing more than ``limit`` bytes (default: the setting
    ``max_body_bytes``) with 413, with or without ``Content-Length``: a
    chunked body is read one byte past the limit, so one that is too large
    is refused whole, never cut (werkzeug's own limit stops reading at the
    limit without a word, so the app leaves ``MAX_CONTENT_LENGTH`` unset and
    every body is read here)."""
    if limit is None:
        from provisiond.web import services

        limit = services().settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; at most {limit} are accepted")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    return data


def json_body(limit: int | None = None, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what is wrong with it."""
    raw = raw_body(limit)
    if not raw.strip():
        if not required:
            return {}
        raise BadRequest("the request needs a JSON object body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8 text") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # far deeper than fields.MAX_DEPTH: name where
        raise ValidationError(_too_deep(text), f"nested more than {fields.MAX_DEPTH} levels deep") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    fields.check_tree(body, "")
    return body


#: JSON's strings and brackets, for :func:`_too_deep`.
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


def _too_deep(text: str) -> str:
    """The top-level field of a JSON document under which nesting first
    passes :data:`fields.MAX_DEPTH` ("body" if not under a field)."""
    depth, last_string, field = 0, None, "body"
    for token in _JSON_TOKENS.finditer(text):
        value = token.group()
        if value.startswith('"'):
            last_string = value
        elif value == ":" and depth == 1 and last_string is not None:
            field = json.loads(last_string)
        elif value in "[{":
            depth += 1
            if depth > fields.MAX_DEPTH:
                return field if depth > 1 else "body"
        elif value in "]}":
            depth -= 1
    return field


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
