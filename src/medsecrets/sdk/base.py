"""``ClientBase``: what ``Client`` and ``AsyncClient`` share besides the sans-IO layer.

Settings resolution, the failover ring, the token (masked in ``repr``) and the
retry seams (``random``); each subclass adds only its httpx client, its
``call`` driver loop and its awaited or plain endpoint methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from medsecrets.sdk.transport import (
    AddressRing,
    ClientSettings,
    RetryPolicy,
    as_sensitive,
    masked,
    resolve_settings,
)
from medsecrets.sensitive import Sensitive

__all__ = ["ClientBase"]


class ClientBase:
    """Shared plumbing of the two clients (not used on its own)."""

    def __init__(
        self,
        addr: str | Sequence[str] | None,
        token: str | Sensitive[str] | None,
        *,
        cacert: str | None,
        verify: bool,
        timeout: float,
        retries: int,
        backoff: float,
        backoff_max: float,
        random: Callable[[], float],
        max_response_bytes: int,
        env: Mapping[str, str] | None,
    ) -> None:
        self._settings: ClientSettings = resolve_settings(
            addr,
            token,
            cacert=cacert,
            verify=verify,
            timeout=timeout,
            policy=RetryPolicy(retries=retries, backoff=backoff, backoff_max=backoff_max),
            max_response_bytes=max_response_bytes,
            env=env,
        )
        self._token = self._settings.token
        self._ring = AddressRing(self._settings.addresses)
        self._random = random

    @property
    def addresses(self) -> tuple[str, ...]:
        """The configured server addresses, in order of preference."""
        return self._ring.addresses

    @property
    def address(self) -> str:
        """The address the next call starts with (the last one that answered)."""
        return self._ring.address(self._ring.current)

    @property
    def token(self) -> Sensitive[str] | None:
        """The token sent with requests (masked in ``repr``)."""
        return self._token

    def set_token(self, token: str | Sensitive[str] | None) -> None:
        """Use ``token`` from now on (``None``: send none)."""
        self._token = as_sensitive(token)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(addresses={list(self.addresses)!r}, token={masked(self._token)})"
