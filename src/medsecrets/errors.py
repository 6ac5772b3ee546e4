"""The one error tree of medsecrets.

Every layer raises errors from this tree and wraps foreign exceptions at its
boundary (``raise ... from None`` wherever the cause could hold secret
material). Messages name the rule, the path or the field, never a value.

::

    MedsecretsError
    ├── SealedError              the store is sealed; nothing can be read or written
    ├── NotInitializedError      the store has never been initialised
    ├── AlreadyInitializedError  init on a store that has a root key already
    ├── InvalidRequest           bad input: the message names the rule broken
    │   ├── ValidationError      a value failed a catalog validator (names field + rule)
    │   ├── InvalidShareError    an unseal/rekey share is malformed, wrong or a duplicate
    │   └── TooLargeError        a value or request is over its size limit
    ├── AuthenticationError      no, expired or unknown credentials
    ├── PermissionDenied         authenticated, but the policy does not allow it
    ├── NotFoundError            no such secret, version, stage or key
    ├── ScheduledForDeletion     the secret is in its recovery window (carries the date)
    ├── ConflictError            the write lost a race or the target exists
    │   ├── CasConflictError     check-and-set: the expected version is stale
    │   └── AlreadyExistsError   create on something that exists
    ├── DecryptionError          authenticated decryption failed (opaque, no detail)
    ├── StorageError             the storage backend failed or refused its settings
    ├── LeaseLostError           a lease expired or is held by someone else
    ├── CatalogError             a catalog file is bad (file, line and problem)
    ├── ProviderError            a KMS or cloud provider call failed
    ├── AuditFailure             no audit device accepted the record: request refused
    └── ConfigError              a server setting is bad (names the setting)
"""

from __future__ import annotations

import datetime as _dt
import re as _re

__all__ = [
    "AlreadyExistsError",
    "AlreadyInitializedError",
    "AuditFailure",
    "AuthenticationError",
    "CasConflictError",
    "CatalogError",
    "ConfigError",
    "ConflictError",
    "DecryptionError",
    "InvalidRequest",
    "InvalidShareError",
    "LeaseLostError",
    "MedsecretsError",
    "NotFoundError",
    "NotInitializedError",
    "PermissionDenied",
    "ProviderError",
    "ScheduledForDeletion",
    "SealedError",
    "StorageError",
    "StorageUnavailable",
    "TooLargeError",
    "ValidationError",
]

_CONTROL = _re.compile(r"[\x00-\x1f\x7f]")


def quote(text: str) -> str:
    """``text`` safe to put in a message: at most 64 characters, no control characters
    (for a client's own input named in an error; not exported by the package)."""
    shown = text if len(text) <= 64 else text[:64] + "…"
    return repr(_CONTROL.sub("?", shown))


class MedsecretsError(Exception):
    """Root of every error medsecrets raises on purpose.

    ``code`` is a stable machine-readable identifier used by the HTTP API and
    the CLI; ``str(error)`` is one readable line with no secret material.
    """

    code = "error"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)

    @property
    def message(self) -> str:
        """The one-line human message."""
        return str(self.args[0]) if self.args else self.code


class SealedError(MedsecretsError):
    """The store is sealed."""

    code = "sealed"

    def __init__(self, message: str = "the store is sealed") -> None:
        super().__init__(message)


class NotInitializedError(MedsecretsError):
    """The store has not been initialised."""

    code = "not_initialized"

    def __init__(self, message: str = "the store is not initialised") -> None:
        super().__init__(message)


class AlreadyInitializedError(MedsecretsError):
    """The store is initialised already."""

    code = "already_initialized"

    def __init__(self, message: str = "the store is already initialised") -> None:
        super().__init__(message)


class InvalidRequest(MedsecretsError):
    """The request is malformed or breaks a rule."""

    code = "invalid_request"


class ValidationError(InvalidRequest):
    """A value failed a validator; names the field and the rule, never the value."""

    code = "validation_failed"

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"field {field!r} failed validation: {rule}")


class InvalidShareError(InvalidRequest):
    """An unseal or rekey share was refused."""

    code = "invalid_share"


class TooLargeError(InvalidRequest):
    """A value or request is over its size limit."""

    code = "too_large"


class AuthenticationError(MedsecretsError):
    """Missing, expired or unknown credentials."""

    code = "unauthenticated"

    def __init__(self, message: str = "missing, expired or invalid token") -> None:
        super().__init__(message)


class PermissionDenied(MedsecretsError):
    """The caller may not do this."""

    code = "permission_denied"

    def __init__(self, message: str = "permission denied") -> None:
        super().__init__(message)


class NotFoundError(MedsecretsError):
    """The thing asked for does not exist."""

    code = "not_found"


class ScheduledForDeletion(MedsecretsError):
    """The secret is soft-deleted and will be purged on ``purge_at``."""

    code = "scheduled_for_deletion"

    def __init__(self, path: str, purge_at: _dt.datetime) -> None:
        self.path = path
        self.purge_at = purge_at
        super().__init__(
            f"secret {path!r} is scheduled for deletion on {purge_at.date().isoformat()}"
        )


class ConflictError(MedsecretsError):
    """The write conflicts with the current state."""

    code = "conflict"


class CasConflictError(ConflictError):
    """Check-and-set failed: the expected version is not the latest."""

    code = "cas_conflict"


class AlreadyExistsError(ConflictError):
    """The target exists already."""

    code = "already_exists"


class DecryptionError(MedsecretsError):
    """Decryption failed. Deliberately carries no detail."""

    code = "decryption_failed"

    def __init__(self, message: str = "decryption failed") -> None:
        super().__init__(message)


class StorageError(MedsecretsError):
    """The storage backend failed or is configured unsafely."""

    code = "storage_error"


class StorageUnavailable(StorageError):
    """The storage backend could not be reached in time (no connection, the connection
    lost, a lock held past the timeout): transient, answered 503. The message says what is
    known of a write's outcome (nothing written, or unknown: read before retrying)."""

    code = "storage_unavailable"


class LeaseLostError(MedsecretsError):
    """The lease is no longer held by the caller."""

    code = "lease_lost"


class CatalogError(MedsecretsError):
    """A catalog file is invalid: names the file, the line and the problem."""

    code = "catalog_error"

    def __init__(self, problem: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        self.problem = problem
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        super().__init__(f"{where}{problem}")


class ProviderError(MedsecretsError):
    """A KMS or cloud provider call failed."""

    code = "provider_error"


class AuditFailure(MedsecretsError):
    """No audit device accepted the record; the request is refused."""

    code = "audit_failure"

    def __init__(self, message: str = "audit unavailable: request refused") -> None:
        super().__init__(message)


class ConfigError(MedsecretsError):
    """A configuration setting is invalid: names the setting."""

    code = "config_error"
