"""Transport-level errors and the JSON error body.

Statuses come from the one table in ``medsecrets.core.status``. Every error
answer is ``{"error": {"code", "message"}, "request_id"}``; a 500 carries a
generic message only (the details stay in the server log, keyed by request id).
"""

from __future__ import annotations

import json

from medsecrets.core.status import status_for
from medsecrets.errors import InvalidRequest, MedsecretsError

__all__ = [
    "InvalidJsonError",
    "MethodNotAllowedError",
    "RequestTimeoutError",
    "UnsupportedMediaTypeError",
    "error_body",
]


class InvalidJsonError(InvalidRequest):
    """The body is not well-formed JSON."""

    code = "invalid_json"

    def __init__(self, message: str = "the request body is not valid JSON") -> None:
        super().__init__(message)


class UnsupportedMediaTypeError(InvalidRequest):
    """The body is not ``application/json``."""

    code = "unsupported_media_type"

    def __init__(self, message: str = "the request body must be application/json") -> None:
        super().__init__(message)


class MethodNotAllowedError(MedsecretsError):
    """The route exists, but not for this method."""

    code = "method_not_allowed"

    def __init__(self, message: str = "method not allowed on this route") -> None:
        super().__init__(message)


class RequestTimeoutError(MedsecretsError):
    """The request was still unanswered after ``api.request_timeout`` seconds (503)."""

    code = "timeout"

    def __init__(self, message: str = "the request timed out; outcome unknown") -> None:
        super().__init__(message)


def error_body(error: BaseException, request_id: str) -> tuple[int, str, bytes]:
    """(status, code, JSON body) for ``error``; 500s get a generic message."""
    status, code = status_for(error)
    if status >= 500 and code == "internal":
        message = f"internal error (request id {request_id})"
    elif isinstance(error, MedsecretsError):
        message = error.message
    else:  # pragma: no cover - status_for maps every non-medsecrets error to 500
        message = "internal error"
    body = {"error": {"code": code, "message": message}, "request_id": request_id}
    return status, code, json.dumps(body, separators=(",", ":")).encode()
