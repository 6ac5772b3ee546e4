"""``SecretCache``: an in-process cache of current secret values over a ``Client``.

Contract:

- ``get(path)`` returns a *new* ``SecretFields`` (``get(path, field)`` the
  field's ``str``): nothing done to what it returns touches the cache. The
  cached fields are a private dict that is never mutated after a fetch (a
  refresh replaces the whole entry), so the new read-only ``SecretFields``
  wraps it without copying it; its ``to_dict()`` is a plain copy. The hit path
  is a dict lookup, a clock read and that object.
- Age counts from the moment the server last confirmed the value. A value is
  fresh until its *refresh point* ``ttl * refresh_ahead * (1 ± jitter)``
  (drawn per fetch, never past ``ttl``). Between the refresh point and
  ``ttl`` it is still served while a refresh runs: in a background thread
  (``background=True``, the default; one at a time per path) or, with
  ``background=False``, synchronously on that access. Past ``ttl`` the access
  refreshes synchronously.
- Refreshes are version-aware: ``describe`` (metadata, no values) tells the
  current version id; if it is the cached one (and the secret is not scheduled
  for deletion), the value is kept and its age reset without reading it again.
  Otherwise, or when the token may not ``list``, the value is read with
  ``get``.
- A refresh that fails because the server is unavailable (``SealedError``,
  ``NotInitializedError``, ``AuditFailure``, ``StorageUnavailable``,
  ``RequestTimedOut``, ``ProviderError``, ``ServerError``,
  ``ServerUnavailableError``) raises, unless
  ``serve_stale_on_error=True``: then the cached value is served while its age
  is at most ``max_stale`` seconds, and the server is asked again at most every
  ``ERROR_RETRY`` seconds. Any other failure (not found, scheduled for
  deletion, permission denied, bad token) drops the entry and raises: the
  cache fails closed.
- Writes through the cache's own client (``put``, ``delete``, ``restore``,
  ``destroy``, stage moves, metadata updates; anything a client's
  ``on_secret_change`` reports, succeeded or failed) drop the entry of their
  path: the next ``get`` reads the server, so a process reads its own writes
  at once. The drop waits for a refresh of that path under way, so no value
  read before the write returned is kept after it. Changes made elsewhere
  (another client, process or the CLI) are seen at the next refresh point, as
  above; ``invalidate(path)`` forgets a path at once.
- ``refresh_now(path)`` refreshes one cached path (or every one) at once.
- Time comes from ``clock.monotonic()`` (``ManualClock`` in tests: no sleeping).
"""

from __future__ import annotations

import math
import random as _random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, overload

from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import (
    AuditFailure,
    MedsecretsError,
    NotFoundError,
    NotInitializedError,
    PermissionDenied,
    ProviderError,
    SealedError,
    StorageUnavailable,
)
from medsecrets.schema.secrets import SecretMetadata, SecretVersion
from medsecrets.sdk.errors import RequestTimedOut, ServerError, ServerUnavailableError
from medsecrets.sensitive import SecretFields

__all__ = ["ERROR_RETRY", "SecretCache", "SecretSource"]

ERROR_RETRY = 1.0
"""Seconds between attempts to reach the server while a stale value is served."""

_new_fields = SecretFields.__new__

_UNAVAILABLE = (
    SealedError,
    NotInitializedError,
    AuditFailure,
    StorageUnavailable,
    RequestTimedOut,
    ProviderError,
    ServerError,
    ServerUnavailableError,
)


class SecretSource(Protocol):
    """What the cache reads from (``Client`` fits). A source with an
    ``on_secret_change(listener)`` method (as ``Client`` has) is told of its writes."""

    def get(self, path: str) -> SecretVersion:
        """The current version of ``path`` with its values."""
        ...

    def describe(self, path: str) -> SecretMetadata:
        """Metadata of ``path`` (no values)."""
        ...


@dataclass(frozen=True, slots=True)
class _Entry:
    fields: dict[str, str] = field(repr=False)
    version_id: str
    confirmed: float  # monotonic time the server last confirmed the value
    refresh_at: float  # serve from memory until then
    expires_at: float  # confirmed + ttl


def _current_id(meta: SecretMetadata) -> str | None:
    if meta.purge_at is not None:
        return None
    for version in meta.versions:
        if "current" in version.stages and not version.destroyed:
            return version.id
    return None


class SecretCache:
    """TTL cache with jittered refresh-ahead; see the module docstring for the contract."""

    def __init__(
        self,
        client: SecretSource,
        *,
        ttl: float = 300.0,
        refresh_ahead: float = 0.8,
        jitter: float = 0.1,
        serve_stale_on_error: bool = False,
        max_stale: float = 3600.0,
        clock: Clock | None = None,
        background: bool = True,
        random: Callable[[], float] = _random.random,
    ) -> None:
        if not (math.isfinite(ttl) and ttl > 0 and math.isfinite(max_stale) and max_stale >= 0):
            raise ValueError("ttl must be a positive and max_stale a non-negative finite number")
        if not 0 < refresh_ahead <= 1 or not 0 <= jitter < 1:
            raise ValueError("refresh_ahead must be in (0, 1] and jitter in [0, 1)")
        self._client = client
        self._ttl = ttl
        self._ahead = ttl * refresh_ahead
        self._jitter = jitter
        self._serve_stale = serve_stale_on_error
        self._max_stale = max_stale
        self._background = background
        self._random = random
        self._now: Callable[[], float] = (
            time.monotonic if clock is None or type(clock) is SystemClock else clock.monotonic
        )
        self._entries: dict[str, _Entry] = {}
        self._lookup = self._entries.get
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._inflight: dict[str, threading.Thread] = {}
        listen = getattr(client, "on_secret_change", None)
        if callable(listen):
            listen(self._forget)

    def __repr__(self) -> str:
        return f"SecretCache(entries={len(self._entries)}, ttl={self._ttl})"

    def __len__(self) -> int:
        return len(self._entries)

    # -- reads -----------------------------------------------------------------------
    @overload
    def get(self, path: str) -> SecretFields: ...

    @overload
    def get(self, path: str, field: str) -> str: ...

    def get(self, path: str, field: str | None = None) -> SecretFields | str:
        """A copy of the current fields of ``path`` (or one field's value)."""
        entry = self._lookup(path)
        if entry is None or self._now() >= entry.refresh_at:
            entry = self._slow(path, entry)
        if field is None:
            copy = _new_fields(SecretFields)
            copy._fields = entry.fields  # immutable: shared, never handed out as a dict
            return copy
        value = entry.fields.get(field)
        if value is None:
            raise NotFoundError(f"secret {path!r} has no field {field!r}")
        return value

    def _slow(self, path: str, entry: _Entry | None) -> _Entry:
        if entry is None:
            return self._refresh(path, None)
        now = self._now()
        if now < entry.expires_at:
            if not self._background:
                return self._refresh(path, entry)
            self._spawn(path)
            return entry
        return self._refresh(path, entry)

    # -- refreshing ------------------------------------------------------------------
    def refresh_now(self, path: str | None = None) -> None:
        """Refresh ``path`` (fetching it if not cached) or every cached path, now.

        For every path, errors are raised after the other paths were refreshed
        (the first one).
        """
        paths = [path] if path is not None else list(self._entries)
        first: MedsecretsError | None = None
        for p in paths:
            try:
                self._refresh(p, self._entries.get(p), force=True)
            except MedsecretsError as exc:
                if path is not None:
                    raise
                first = first or exc
        if first is not None:
            raise first

    def invalidate(self, path: str | None = None) -> None:
        """Forget ``path`` (or everything); the next ``get`` reads from the server.

        Waits for a refresh of the path under way, so what it read is forgotten too.
        """
        paths = {*self._entries, *self._locks} if path is None else {path}
        for p in paths:
            self._forget(p)

    def _forget(self, path: str) -> None:
        with self._lock(path):
            self._entries.pop(path, None)

    def wait_for_refreshes(self, timeout: float | None = None) -> None:
        """Wait until the background refreshes running now have finished."""
        for thread in list(self._inflight.values()):
            thread.join(timeout)

    def _lock(self, path: str) -> threading.Lock:
        lock = self._locks.get(path)
        if lock is None:
            with self._locks_guard:
                lock = self._locks.setdefault(path, threading.Lock())
        return lock

    def _spawn(self, path: str) -> None:
        with self._locks_guard:
            if path in self._inflight:
                return
            thread = threading.Thread(
                target=self._background_refresh, args=(path,), name="secret-cache-refresh"
            )
            thread.daemon = True
            self._inflight[path] = thread
        thread.start()

    def _background_refresh(self, path: str) -> None:
        try:
            self._refresh(path, self._entries.get(path))
        except MedsecretsError:
            pass  # raised again to the caller that needs the value once it expires
        finally:
            with self._locks_guard:
                self._inflight.pop(path, None)

    def _refresh(self, path: str, seen: _Entry | None, *, force: bool = False) -> _Entry:
        with self._lock(path):
            current = self._entries.get(path)
            if (
                not force
                and current is not None
                and current is not seen
                and self._now() < current.refresh_at
            ):
                return current  # refreshed by someone else meanwhile
            try:
                fresh = self._fetch(path, current)
            except _UNAVAILABLE as exc:
                if current is None:
                    raise
                return self._on_unavailable(path, current, exc)
            except MedsecretsError:
                self._entries.pop(path, None)
                raise
            self._entries[path] = fresh
            return fresh

    def _on_unavailable(self, path: str, current: _Entry, error: MedsecretsError) -> _Entry:
        now = self._now()
        if now < current.expires_at:
            limit = current.expires_at  # not stale yet: keep serving until ttl
        elif self._serve_stale and now - current.confirmed <= self._max_stale:
            limit = current.confirmed + self._max_stale
        else:
            raise error
        retry = _Entry(
            fields=current.fields,
            version_id=current.version_id,
            confirmed=current.confirmed,
            refresh_at=min(now + ERROR_RETRY, limit),
            expires_at=current.expires_at,
        )
        self._entries[path] = retry
        return retry

    def _fetch(self, path: str, current: _Entry | None) -> _Entry:
        if current is not None:
            try:
                meta = self._client.describe(path)
            except PermissionDenied:
                meta = None
            if meta is not None and _current_id(meta) == current.version_id:
                return self._entry(current.fields, current.version_id)
        secret = self._client.get(path)
        return self._entry(secret.fields.to_dict(), secret.id)

    def _entry(self, fields: dict[str, str], version_id: str) -> _Entry:
        now = self._now()
        spread = self._jitter * (2.0 * self._random() - 1.0)
        refresh = min(self._ahead * (1.0 + spread), self._ttl)
        return _Entry(
            fields=fields,
            version_id=version_id,
            confirmed=now,
            refresh_at=now + refresh,
            expires_at=now + self._ttl,
        )
