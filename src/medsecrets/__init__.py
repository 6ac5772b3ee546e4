"""medsecrets: encrypted, versioned, audited secrets management for healthcare AI platforms.

The public surface (``__all__``, pinned by ``tests/test_public_api.py``)::

    from medsecrets import Client, SecretCache

    with Client() as client:                 # MEDSECRETS_ADDR / MEDSECRETS_TOKEN
        secret = client.get("medessence/production/database")

- the SDK: ``Client``, ``AsyncClient``, ``SecretCache`` and ``Secret`` (what
  ``Client.get`` returns), with the SDK's own errors ``ServerError``,
  ``ServerUnavailableError`` and ``UnexpectedResponseError``;
- the embedded store: ``SecretStore`` and the seal configurations it (and
  ``Client.init``) takes: ``ShamirSealConfig``, ``KeyFileSealConfig``,
  ``AwsKmsSealConfig``;
- the error tree of ``medsecrets.errors``, rooted at ``MedsecretsError``;
- ``__version__``.

Everything but ``__version__`` loads lazily (PEP 562): ``import medsecrets``
imports no third-party package (no httpx, Starlette, granian, cryptography or
boto3) and reads nothing. Layers and their modules are documented in
``docs/architecture.md``; the API's value types live in ``medsecrets.schema``.
"""

from __future__ import annotations

from medsecrets.lazy import resolve

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~15 ms); mypy knows it
if TYPE_CHECKING:
    from medsecrets.errors import (
        AlreadyExistsError,
        AlreadyInitializedError,
        AuditFailure,
        AuthenticationError,
        CasConflictError,
        CatalogError,
        ConfigError,
        ConflictError,
        DecryptionError,
        InvalidRequest,
        InvalidShareError,
        LeaseLostError,
        MedsecretsError,
        NotFoundError,
        NotInitializedError,
        PermissionDenied,
        ProviderError,
        ScheduledForDeletion,
        SealedError,
        StorageError,
        StorageUnavailable,
        TooLargeError,
        ValidationError,
    )
    from medsecrets.schema.seal import AwsKmsSealConfig, KeyFileSealConfig, ShamirSealConfig
    from medsecrets.sdk import Secret
    from medsecrets.sdk.aclient import AsyncClient
    from medsecrets.sdk.cache import SecretCache
    from medsecrets.sdk.client import Client
    from medsecrets.sdk.errors import ServerError, ServerUnavailableError, UnexpectedResponseError
    from medsecrets.store import SecretStore

del TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "AlreadyInitializedError",
    "AsyncClient",
    "AuditFailure",
    "AuthenticationError",
    "AwsKmsSealConfig",
    "CasConflictError",
    "CatalogError",
    "Client",
    "ConfigError",
    "ConflictError",
    "DecryptionError",
    "InvalidRequest",
    "InvalidShareError",
    "KeyFileSealConfig",
    "LeaseLostError",
    "MedsecretsError",
    "NotFoundError",
    "NotInitializedError",
    "PermissionDenied",
    "ProviderError",
    "ScheduledForDeletion",
    "SealedError",
    "Secret",
    "SecretCache",
    "SecretStore",
    "ServerError",
    "ServerUnavailableError",
    "ShamirSealConfig",
    "StorageError",
    "StorageUnavailable",
    "TooLargeError",
    "UnexpectedResponseError",
    "ValidationError",
    "__version__",
]

_EXPORTS = {
    "AlreadyExistsError": "medsecrets.errors",
    "AlreadyInitializedError": "medsecrets.errors",
    "AsyncClient": "medsecrets.sdk.aclient",
    "AuditFailure": "medsecrets.errors",
    "AuthenticationError": "medsecrets.errors",
    "AwsKmsSealConfig": "medsecrets.schema.seal",
    "CasConflictError": "medsecrets.errors",
    "CatalogError": "medsecrets.errors",
    "Client": "medsecrets.sdk.client",
    "ConfigError": "medsecrets.errors",
    "ConflictError": "medsecrets.errors",
    "DecryptionError": "medsecrets.errors",
    "InvalidRequest": "medsecrets.errors",
    "InvalidShareError": "medsecrets.errors",
    "KeyFileSealConfig": "medsecrets.schema.seal",
    "LeaseLostError": "medsecrets.errors",
    "MedsecretsError": "medsecrets.errors",
    "NotFoundError": "medsecrets.errors",
    "NotInitializedError": "medsecrets.errors",
    "PermissionDenied": "medsecrets.errors",
    "ProviderError": "medsecrets.errors",
    "ScheduledForDeletion": "medsecrets.errors",
    "SealedError": "medsecrets.errors",
    "Secret": "medsecrets.sdk",
    "SecretCache": "medsecrets.sdk.cache",
    "SecretStore": "medsecrets.store",
    "ServerError": "medsecrets.sdk.errors",
    "ServerUnavailableError": "medsecrets.sdk.errors",
    "ShamirSealConfig": "medsecrets.schema.seal",
    "StorageError": "medsecrets.errors",
    "StorageUnavailable": "medsecrets.errors",
    "TooLargeError": "medsecrets.errors",
    "UnexpectedResponseError": "medsecrets.sdk.errors",
    "ValidationError": "medsecrets.errors",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
