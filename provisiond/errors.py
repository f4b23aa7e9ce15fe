"""The error hierarchy. Each class knows its HTTP status and its short code.

The web layer turns any :class:`ProvisiondError` into
``{"error": code, "message": str(exc)}`` with ``status``; provctl maps the
status back to an exit code. Nothing else needs to know.
"""

from __future__ import annotations

from typing import Any


class ProvisiondError(Exception):
    """Something went wrong in provisiond."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: Any) -> None:
        """``code``: a more precise error code than the class's (``ticket_used``)."""
        super().__init__(message or (self.__doc__ or self.code).strip())
        if code:
            self.code = code
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0])

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        body.update(self.details)
        return body


class ConfigError(ProvisiondError):
    """The configuration is invalid."""

    code = "config_error"


class BadRequest(ProvisiondError):
    """The request could not be understood."""

    status = 400
    code = "bad_request"


class ValidationError(BadRequest):
    """A field has a value provisiond does not accept.

    ``field`` names the field; ``location`` (``file:line``) where it came
    from when it was read from an import file.
    """

    code = "invalid"

    def __init__(self, field: str, problem: str, location: str | None = None) -> None:
        where = f"{location}: " if location else ""
        super().__init__(f"{where}{field}: {problem}", field=field)
        if location:
            self.details["location"] = location
        self.field = field
        self.problem = problem
        self.location = location

    def at(self, location: str) -> ValidationError:
        """The same error, located in an import file."""
        return ValidationError(self.field, self.problem, location)


class Unauthorized(ProvisiondError):
    """A valid bearer token is required."""

    status = 401
    code = "unauthorized"


class Forbidden(ProvisiondError):
    """The credential is valid, but its role may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ProvisiondError):
    """No such object."""

    status = 404
    code = "not_found"


class Conflict(ProvisiondError):
    """The request conflicts with the current state."""

    status = 409
    code = "conflict"


class Gone(ProvisiondError):
    """What was asked for existed and is no longer usable (a used or expired ticket)."""

    status = 410
    code = "gone"


class PayloadTooLarge(ProvisiondError):
    """The request body is too large."""

    status = 413
    code = "too_large"


class TemplateError(ProvisiondError):
    """A kickstart could not be rendered completely.

    ``fragment`` and ``line`` locate the problem in the fragment directories (``provisiond/shipped/fragments/`` and the site's).
    """

    status = 500
    code = "template_error"

    def __init__(self, message: str, fragment: str | None = None, line: int | None = None) -> None:
        where = ""
        if fragment:
            where = f"fragment {fragment!r}" + (f" line {line}" if line else "") + ": "
        super().__init__(where + message)
        if fragment:
            self.details["fragment"] = fragment
        if line:
            self.details["line"] = line


class RetryLater(ProvisiondError):
    """Not now: come back after ``retry_after`` seconds (sent as Retry-After)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class TooManyRequests(RetryLater):
    """Too many attempts (failed console logins): try again after Retry-After."""

    status = 429
    code = "too_many_requests"


class Overloaded(RetryLater):
    """provisiond is too busy for this call now: come back after Retry-After."""

    status = 503
    code = "overloaded"


class ProfileError(ProvisiondError):
    """An install profile is missing or invalid."""

    status = 500
    code = "profile_error"
