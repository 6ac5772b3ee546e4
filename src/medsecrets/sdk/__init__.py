"""The medsecrets Python SDK: typed sync and async HTTP clients and a secret cache.

::

    from medsecrets.sdk import Client, SecretCache

    client = Client()                      # MEDSECRETS_ADDR / MEDSECRETS_TOKEN / MEDSECRETS_CACERT
    cache = SecretCache(client, ttl=300)
    password = cache.get("medessence/production/database", "password")
"""

from medsecrets.sdk.aclient import AsyncClient
from medsecrets.sdk.cache import SecretCache
from medsecrets.sdk.client import Client
from medsecrets.sdk.errors import ServerError, ServerUnavailableError, UnexpectedResponseError
from medsecrets.sdk.models import Secret

__all__ = [
    "AsyncClient",
    "Client",
    "Secret",
    "SecretCache",
    "ServerError",
    "ServerUnavailableError",
    "UnexpectedResponseError",
]
