"""The medsecrets Python SDK: typed sync and async HTTP clients and a secret cache.

::

    from medsecrets.sdk import Client, SecretCache

    client = Client()                      # MEDSECRETS_ADDR / MEDSECRETS_TOKEN / MEDSECRETS_CACERT
                                           # (and MEDSECRETS_CLIENT_CERT / _KEY for mutual TLS)
    cache = SecretCache(client, ttl=300)
    password = cache.get("medessence/production/database", "password")

The clients answer with the API's value types (``medsecrets.schema``); the SDK
speaks HTTP only and imports no server module. The exports below load lazily
(PEP 562): ``import medsecrets.sdk`` imports neither httpx nor asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medsecrets.lazy import resolve
from medsecrets.schema.secrets import SecretVersion

if TYPE_CHECKING:
    from medsecrets.sdk.aclient import AsyncClient
    from medsecrets.sdk.cache import SecretCache
    from medsecrets.sdk.client import Client
    from medsecrets.sdk.errors import (
        ClientCertificateError,
        RequestTimedOut,
        ServerError,
        ServerUnavailableError,
        UnexpectedResponseError,
    )

__all__ = [
    "AsyncClient",
    "Client",
    "ClientCertificateError",
    "RequestTimedOut",
    "Secret",
    "SecretCache",
    "ServerError",
    "ServerUnavailableError",
    "UnexpectedResponseError",
]

Secret = SecretVersion
"""What ``Client.get`` returns: one version of a secret; its ``fields`` mask values in ``repr``."""

_EXPORTS = {
    "AsyncClient": "medsecrets.sdk.aclient",
    "Client": "medsecrets.sdk.client",
    "ClientCertificateError": "medsecrets.sdk.errors",
    "RequestTimedOut": "medsecrets.sdk.errors",
    "SecretCache": "medsecrets.sdk.cache",
    "ServerError": "medsecrets.sdk.errors",
    "ServerUnavailableError": "medsecrets.sdk.errors",
    "UnexpectedResponseError": "medsecrets.sdk.errors",
}


def __getattr__(name: str) -> object:
    return resolve(__name__, _EXPORTS, name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
