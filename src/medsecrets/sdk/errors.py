"""The SDK's one status → exception table, and the few errors only a client can see.

Every error body the server sends is ``{"error": {"code", "message"}}``
(``docs/api.md``). ``ERROR_TABLE`` maps each ``(status, code)`` to a class of
``medsecrets.errors``; the first row of a status is its fallback for codes the
client does not know (an older client talking to a newer server). The raised
error carries the server's ``code`` and its one-line message (the server
promises no values in messages; the client never adds the response body).

Client-side additions to the tree::

    MedsecretsError
    ├── ClientCertificateError     the client certificate or key cannot be used (also a ValueError)
    ├── ServerUnavailableError     no server address answered (after retries and failover)
    ├── ServerError           the server failed (HTTP 500 ``internal`` or an unknown 5xx)
    └── UnexpectedResponseError    a 2xx response the client could not read
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping

from medsecrets.errors import (
    AlreadyExistsError,
    AlreadyInitializedError,
    AuditFailure,
    AuthenticationError,
    CasConflictError,
    ConflictError,
    InvalidRequest,
    InvalidShareError,
    MedsecretsError,
    NotFoundError,
    NotInitializedError,
    PermissionDenied,
    ProviderError,
    ScheduledForDeletion,
    SealedError,
    StorageUnavailable,
    TooLargeError,
    ValidationError,
)

__all__ = [
    "ERROR_TABLE",
    "ClientCertificateError",
    "RequestTimedOut",
    "ServerError",
    "ServerUnavailableError",
    "UnexpectedResponseError",
    "error_from_response",
]


class ClientCertificateError(MedsecretsError, ValueError):
    """The client certificate or its key cannot be used: a missing or unreadable file, no
    PEM certificate or key in it, an encrypted key without its password (or a wrong
    one), a key that does not match the certificate. The message names the file(s) and
    the problem, never their content. A ``ValueError`` too, as the clients' other bad
    settings are."""

    code = "client_certificate"


class ServerUnavailableError(MedsecretsError):
    """No server address answered (connection refused, reset or timed out), after retries."""

    code = "unavailable"


class ServerError(MedsecretsError):
    """The server reported an internal failure (HTTP 500) or an unknown 5xx status."""

    code = "internal"


class RequestTimedOut(MedsecretsError):
    """The server gave up on the request after its ``request_timeout`` (503 ``timeout``):
    the outcome of a write is unknown, so read before retrying it."""

    code = "timeout"


class UnexpectedResponseError(MedsecretsError):
    """The server answered 2xx with a body the client could not read."""

    code = "unexpected_response"


ERROR_TABLE: tuple[tuple[int, str, type[MedsecretsError]], ...] = (
    (400, "invalid_request", InvalidRequest),
    (400, "invalid_share", InvalidShareError),
    (400, "invalid_json", InvalidRequest),
    (401, "unauthenticated", AuthenticationError),
    (403, "permission_denied", PermissionDenied),
    (404, "not_found", NotFoundError),
    (405, "method_not_allowed", InvalidRequest),
    (409, "conflict", ConflictError),
    (409, "cas_conflict", CasConflictError),
    (409, "already_exists", AlreadyExistsError),
    (409, "already_initialized", AlreadyInitializedError),
    (410, "scheduled_for_deletion", ScheduledForDeletion),
    (413, "too_large", TooLargeError),
    (415, "unsupported_media_type", InvalidRequest),
    (422, "validation_failed", ValidationError),
    (500, "internal", ServerError),
    (502, "provider_error", ProviderError),
    (503, "sealed", SealedError),
    (503, "not_initialized", NotInitializedError),
    (503, "audit_failure", AuditFailure),
    (503, "timeout", RequestTimedOut),
    (503, "storage_unavailable", StorageUnavailable),
)
"""``(status, code, class)``: the one table. The first row of each status is its fallback."""

_BY_CODE: Mapping[str, type[MedsecretsError]] = {code: cls for _, code, cls in ERROR_TABLE}
_BY_STATUS: Mapping[int, tuple[str, type[MedsecretsError]]] = {
    status: (code, cls) for status, code, cls in reversed(ERROR_TABLE)
}

_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})")
_VALIDATION = re.compile(r"field '([^']*)' failed validation: (.*)\Z", re.DOTALL)


def _fallback(status: int) -> tuple[str, type[MedsecretsError]]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return "invalid_request", InvalidRequest
    return "internal", ServerError


def _instantiate(cls: type[MedsecretsError], message: str, subject: str) -> MedsecretsError:
    """An instance of ``cls`` carrying ``message`` (classes with richer constructors included)."""
    error: MedsecretsError
    if issubclass(cls, ScheduledForDeletion):
        match = _DATE.search(message)
        day = dt.date.fromisoformat(match.group(1)) if match else dt.date.min
        error = cls(subject, dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC))
    elif issubclass(cls, ValidationError):
        found = _VALIDATION.search(message)
        error = cls(found.group(1), found.group(2)) if found else cls("", message)
    else:
        error = cls(message)
    error.args = (message,)
    return error


def error_from_response(status: int, content: bytes, *, subject: str = "") -> MedsecretsError:
    """The exception for an error response (``status`` ≥ 400, body ``content``).

    ``subject`` is the secret path of the request, if any (used by
    ``ScheduledForDeletion.path``). Never includes the raw body.
    """
    code, cls = _fallback(status)
    message = f"the server answered HTTP {status}"
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than it reads
        body = None
    error_obj = body.get("error") if isinstance(body, dict) else None
    if isinstance(error_obj, dict):
        sent_code = error_obj.get("code")
        sent_message = error_obj.get("message")
        if isinstance(sent_code, str) and sent_code:
            code = sent_code
            cls = _BY_CODE.get(sent_code, cls)
        if isinstance(sent_message, str) and sent_message:
            message = sent_message
    error = _instantiate(cls, message, subject)
    error.code = code
    return error
