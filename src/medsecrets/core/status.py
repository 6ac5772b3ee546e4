"""The one table from error codes to HTTP-style status codes.

Looked up along the error class's MRO, so a subclass without its own entry
gets its parent's status. Codes that come from the transport (malformed
JSON, wrong media type, wrong method) are listed here too, so there is one
table. Anything not in it is a 500.
"""

from __future__ import annotations

from medsecrets.errors import MedsecretsError

__all__ = ["GENERIC_CODES", "STATUS_BY_CODE", "status_for"]

STATUS_BY_CODE: dict[str, int] = {
    "invalid_request": 400,
    "invalid_share": 400,
    "invalid_json": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "cas_conflict": 409,
    "already_exists": 409,
    "already_initialized": 409,
    "scheduled_for_deletion": 410,
    "too_large": 413,
    "unsupported_media_type": 415,
    "validation_failed": 422,
    "provider_error": 502,
    "sealed": 503,
    "not_initialized": 503,
    "audit_failure": 503,
    "storage_unavailable": 503,
    "timeout": 503,
}

GENERIC_CODES = frozenset(
    {"decryption_failed", "storage_error", "lease_lost", "catalog_error", "config_error", "error"}
)
"""Codes answered as a generic 500 ``internal`` (their messages stay in the server)."""


def status_for(error: BaseException) -> tuple[int, str]:
    """(status, public code) for ``error``; unknown errors are ``(500, "internal")``."""
    if isinstance(error, MedsecretsError):
        for cls in type(error).__mro__:
            code = getattr(cls, "code", None)
            if isinstance(code, str) and code in STATUS_BY_CODE:
                return STATUS_BY_CODE[code], code
    return 500, "internal"
