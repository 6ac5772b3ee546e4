"""``ClientBase``: what ``Client`` and ``AsyncClient`` share besides the sans-IO layer.

Settings resolution, the failover ring, the token (masked in ``repr``), the
retry seams (``random``) and the listeners told of secret changes
(``on_secret_change``); each subclass adds only its httpx client, its ``call``
driver loop and its awaited or plain endpoint methods.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence

from medsecrets.sdk.transport import (
    SDK_NAMES,
    AddressRing,
    Call,
    ClientSettings,
    RetryPolicy,
    SettingNames,
    checked_token,
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
        client_cert: str | None = None,
        client_key: str | None = None,
        client_key_password: str | Sensitive[str] | None = None,
        setting_names: SettingNames | None = None,
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
            client_cert=client_cert,
            client_key=client_key,
            client_key_password=client_key_password,
            names=setting_names or SDK_NAMES,
        )
        self._token = self._settings.token
        self._ring = AddressRing(self._settings.addresses)
        self._random = random
        self._listeners: list[Callable[[], Callable[[str], None] | None]] = []
        self._listeners_lock = threading.Lock()

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
        """Use ``token`` from now on (``None``: send none); ``ValueError`` (naming no part
        of it) unless it is printable ASCII without spaces, as in the constructor."""
        self._token = checked_token(token)

    def on_secret_change(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(path)`` once a call of this client that may have changed the
        secret at ``path`` has ended: every call about one secret except a ``GET``
        (``put``, ``delete``, ``restore``, ``destroy``, stage moves, metadata
        updates), whether it succeeded or not (a write whose answer was lost may
        have been applied). ``SecretCache`` listens so that its client's own
        writes are read back at once. The listener runs in the calling thread,
        before the call returns, and must not raise. A bound method is held
        weakly (an object that is dropped stops listening), another callable
        for the client's life."""
        ref: Callable[[], Callable[[str], None] | None]
        if inspect.ismethod(listener):
            ref = weakref.WeakMethod(listener)
        else:

            def ref() -> Callable[[str], None]:
                return listener

        with self._listeners_lock:
            self._listeners.append(ref)

    def _changed(self, call: Call[object]) -> None:
        """Tell the listeners that ``call`` has ended, if it may have changed a secret."""
        if call.method == "GET" or not call.subject or not self._listeners:
            return
        with self._listeners_lock:
            self._listeners = [ref for ref in self._listeners if ref() is not None]
            listeners = [ref() for ref in self._listeners]
        for listener in listeners:
            if listener is not None:
                listener(call.subject)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(addresses={list(self.addresses)!r}, token={masked(self._token)})"
