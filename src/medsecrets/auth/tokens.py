"""Bearer tokens: random, stored only as keyed hashes, with TTLs, paths and capabilities.

A token is ``ms.`` followed by 43 URL-safe base64 characters (256 random bits).
The server never stores it: records are keyed by HMAC-SHA256(hmac key, token),
with the HMAC key generated once and kept through the barrier.

Storage layout (every record through the barrier, so encrypted at rest):

- ``auth/hmac-key``: the 32-byte HMAC key;
- ``auth/tokens/<hash hex>``: the token's ``TokenInfo`` as JSON;
- ``auth/accessors/<accessor>``: the hash hex of the token with that accessor;
- ``auth/children/<parent accessor>/<child accessor>``: empty; links a child to its parent.

Contract:

- ``create`` validates everything (TTL 1 s to 31 days, known capabilities,
  path prefixes) and never lets a child exceed its parent: capabilities a
  subset, every path under one of the parent's, expiry no later than the parent's;
- ``authenticate`` raises ``AuthenticationError`` (one message, no detail) for
  a malformed, unknown, expired or revoked token; it re-checks expiry on every
  call, and serves repeated calls from an in-process cache that ``revoke``
  invalidates here and that other processes re-check every ``cache_seconds``
  (or on every use with ``revalidate``, for storage with a coherent read cache);
- ``revoke`` removes the token and all its descendants in one atomic batch;
- ``purge_expired`` deletes the records of expired tokens (the server's
  sweeper calls it every ``sweep_interval``);
- ``forget`` drops the HMAC key and the cache; it runs by itself whenever the
  barrier it was given seals (``Barrier.on_seal``), also a seal that follows
  another worker's (the latch). A lookup that was under way when it ran keeps
  nothing it read (a generation count, checked after every cache fill).

Nothing here logs, and no repr or message contains a token.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable

from medsecrets.barrier.base import Barrier, SecureStorage
from medsecrets.barrier.stored_key import get_or_create
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequest,
    MedsecretsError,
    NotFoundError,
    PermissionDenied,
    SealedError,
    StorageError,
)
from medsecrets.schema.tokens import TokenInfo, covers
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Delete, Expect, Operation, Put

__all__ = [
    "CAPABILITIES",
    "DEFAULT_TTL",
    "MAX_TTL",
    "MIN_TTL",
    "NO_SUCH_ACCESSOR",
    "TOKEN_PREFIX",
    "TokenStore",
]

NO_SUCH_ACCESSOR = "no token with this accessor"
"""The answer for an accessor that names no token the caller may see (an unknown one, or
one outside its tree: the same words, so its existence is not revealed)."""

CAPABILITIES: tuple[str, ...] = (
    "read",
    "write",
    "list",
    "delete",
    "destroy",
    "generate",
    "sudo",
    "token",
)
"""Every capability a token can hold, in canonical order."""

TOKEN_PREFIX = "ms."  # noqa: S105 - a prefix, not a credential
MIN_TTL = 1.0
MAX_TTL = 31 * 86400.0
DEFAULT_TTL = 86400.0
"""TTL of a token created without one (24 hours, capped by the parent's expiry)."""

HMAC_KEY = "auth/hmac-key"
TOKENS = "auth/tokens/"
ACCESSORS = "auth/accessors/"
CHILDREN = "auth/children/"

_TOKEN_LENGTH = len(TOKEN_PREFIX) + 43
_MAX_PATHS = 64
_MAX_PATH_LENGTH = 512
_MAX_DISPLAY_NAME = 128
_MAX_CACHE = 10_000
_ACCESSOR = re.compile(r"[0-9a-f]{32}")
_PATH_PREFIX = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/)*[A-Za-z0-9][A-Za-z0-9._-]*/?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _dumps(info: TokenInfo) -> bytes:
    doc = {
        "accessor": info.accessor,
        "display_name": info.display_name,
        "paths": list(info.paths),
        "capabilities": list(info.capabilities),
        "created_at": info.created_at.isoformat(),
        "expires_at": info.expires_at.isoformat() if info.expires_at else None,
        "parent": info.parent,
        "root": info.root,
        "emergency": info.emergency,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _loads(raw: bytes) -> TokenInfo:
    try:
        doc = json.loads(raw)
        expires = doc["expires_at"]
        return TokenInfo(
            accessor=str(doc["accessor"]),
            display_name=str(doc["display_name"]),
            paths=tuple(doc["paths"]),
            capabilities=tuple(doc["capabilities"]),
            created_at=dt.datetime.fromisoformat(doc["created_at"]),
            expires_at=dt.datetime.fromisoformat(expires) if expires else None,
            parent=doc["parent"],
            root=bool(doc["root"]),
            emergency=doc.get("emergency") is True,
        )
    except (ValueError, KeyError, TypeError):
        raise StorageError("token record is malformed") from None


def _check_paths(paths: Iterable[str]) -> tuple[str, ...]:
    if isinstance(paths, str):
        raise InvalidRequest("paths must be a list of path prefixes")
    clean: list[str] = []
    for path in paths:
        if not isinstance(path, str) or not path:
            raise InvalidRequest("paths must be non-empty strings")
        if path != "*":
            if len(path) > _MAX_PATH_LENGTH:
                raise InvalidRequest(f"a path prefix is longer than {_MAX_PATH_LENGTH} characters")
            if _CONTROL.search(path) or not _PATH_PREFIX.fullmatch(path):
                raise InvalidRequest(
                    "path prefixes are '*' or '/'-separated segments of letters, digits, "
                    "'.', '_' and '-' (no empty, '.' or '..' segments)"
                )
            if any(seg in (".", "..") for seg in path.split("/")):
                raise InvalidRequest("path prefixes may not contain '.' or '..' segments")
        if path not in clean:
            clean.append(path)
    if not clean:
        raise InvalidRequest("a token needs at least one path prefix")
    if len(clean) > _MAX_PATHS:
        raise InvalidRequest(f"a token may have at most {_MAX_PATHS} path prefixes")
    return tuple(clean)


def _check_capabilities(capabilities: Iterable[str]) -> tuple[str, ...]:
    if isinstance(capabilities, str):
        raise InvalidRequest("capabilities must be a list")
    given = set()
    for cap in capabilities:
        if cap not in CAPABILITIES:
            raise InvalidRequest(f"unknown capability (known: {', '.join(CAPABILITIES)})")
        given.add(cap)
    if not given:
        raise InvalidRequest("a token needs at least one capability")
    return tuple(c for c in CAPABILITIES if c in given)


def _check_ttl(ttl: float | None) -> float:
    if ttl is None:
        return DEFAULT_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or math.isnan(ttl):
        raise InvalidRequest("ttl must be a number of seconds")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise InvalidRequest(f"ttl must be from {MIN_TTL:g} s to {MAX_TTL / 86400:g} days")
    return float(ttl)


def _check_display_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > _MAX_DISPLAY_NAME or _CONTROL.search(name):
        raise InvalidRequest(
            f"display_name must be a string of at most {_MAX_DISPLAY_NAME} printable characters"
        )
    return name


class TokenStore:
    """Creates, authenticates, looks up and revokes tokens (see module docstring)."""

    def __init__(
        self,
        secure: SecureStorage,
        *,
        clock: Clock | None = None,
        cache_seconds: float = 5.0,
        random: Callable[[int], bytes] = os.urandom,
        revalidate: bool = False,
    ) -> None:
        """``revalidate``: check a cached token against its sealed record on every use
        (for storage whose reads are cached coherently across processes, as
        ``SqliteStorage``'s are: the check is then a memory lookup) instead of every
        ``cache_seconds``; a revocation by any process then takes effect at once."""
        self._secure = secure
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._cache_seconds = cache_seconds
        self._revalidate = revalidate
        self._random = random
        self._key: bytes | None = None
        self._mac: hmac.HMAC | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[TokenInfo, float, bytes]] = {}  # info, when, record
        self._generation = 0  # forgets so far: a fill that saw one come undoes itself
        if isinstance(secure, Barrier):
            secure.on_seal(self.forget)

    def __repr__(self) -> str:
        return f"TokenStore(cached={len(self._cache)})"

    # -- keys and hashes ---------------------------------------------------------
    def _hmac_key(self) -> bytes:
        key = self._key
        if key is not None:
            return key
        with self._lock:
            if self._key is None:
                self._key = get_or_create(self._secure, HMAC_KEY, lambda: self._random(32))
            return self._key

    def _hash(self, token: str) -> str:
        # A keyed HMAC object copied per token: short inputs are hashed without releasing
        # the GIL (hmac.digest() releases and re-acquires it, a costly hand-off under load).
        mac = self._mac
        if mac is None:
            generation = self._generation
            mac = self._mac = hmac.new(self._hmac_key(), digestmod=hashlib.sha256)
            if self._generation != generation:  # sealed meanwhile: keep no key
                self._mac = None
        copy = mac.copy()
        copy.update(token.encode("utf-8"))
        return copy.hexdigest()

    def forget(self) -> None:
        """Drop the HMAC key and every cached token from memory (on seal)."""
        with self._lock:
            self._generation += 1  # first: a fill under way sees it and undoes itself
            self._key = None
            self._mac = None
            self._cache.clear()

    # -- create --------------------------------------------------------------------
    def _new_token(self) -> str:
        raw = base64.urlsafe_b64encode(self._random(32)).rstrip(b"=").decode("ascii")
        return TOKEN_PREFIX + raw

    def _store(self, token: str, info: TokenInfo) -> None:
        digest = self._hash(token)
        ops: list[Operation] = [
            Expect(TOKENS + digest, None),
            Expect(ACCESSORS + info.accessor, None),
            Put(TOKENS + digest, _dumps(info)),
            Put(ACCESSORS + info.accessor, digest.encode("ascii")),
        ]
        if info.parent is not None:
            parent_digest, etag = self._secure.get_with_etag(ACCESSORS + info.parent)
            if parent_digest is None:
                raise AuthenticationError
            ops += [
                Expect(ACCESSORS + info.parent, etag),
                Put(f"{CHILDREN}{info.parent}/{info.accessor}", b"-"),
            ]
        try:
            self._secure.batch(ops)
        except ConflictError:
            # The parent was revoked meanwhile (random collisions are not a thing).
            raise AuthenticationError from None

    def create(
        self,
        *,
        paths: Iterable[str],
        capabilities: Iterable[str],
        ttl: float | None,
        display_name: str,
        parent: TokenInfo | None,
        emergency: bool = False,
    ) -> tuple[Sensitive[str], TokenInfo]:
        """Issue a token; returns it (shown once) and its info.

        ``InvalidRequest`` for bad input; ``PermissionDenied`` if it would exceed
        ``parent`` (capabilities, paths). Its expiry is capped at the parent's.
        A child of a token that is not root is named ``<parent's name>/<display_name>``:
        the name is the principal of audit records, and a delegated token must not
        pass for another (a CI token naming its child ``dev-root``). ``emergency``
        makes a break-glass token; a child of one is one too.
        """
        clean_paths = _check_paths(paths)
        clean_caps = _check_capabilities(capabilities)
        seconds = _check_ttl(ttl)
        name = _check_display_name(display_name)
        if parent is not None and not parent.root:
            name = _check_display_name(f"{parent.display_name}/{name}")
        now = self._clock.now()
        expires = now + dt.timedelta(seconds=seconds)
        if parent is not None:
            extra = [c for c in clean_caps if c not in parent.capabilities]
            if extra:
                raise PermissionDenied(
                    f"a child token cannot have capability {extra[0]!r}: its parent lacks it"
                )
            for path in clean_paths:
                if path == "*" and "*" not in parent.paths:
                    raise PermissionDenied("a child token cannot have '*': its parent lacks it")
                if not any(covers(p, path) for p in parent.paths):
                    raise PermissionDenied(
                        "a child token's paths must lie under its parent's paths"
                    )
            if parent.expires_at is not None and parent.expires_at < expires:
                expires = parent.expires_at
        info = TokenInfo(
            accessor=self._random(16).hex(),
            display_name=name,
            paths=clean_paths,
            capabilities=clean_caps,
            created_at=now,
            expires_at=expires,
            parent=parent.accessor if parent is not None else None,
            root=False,
            emergency=emergency or (parent is not None and parent.emergency),
        )
        token = self._new_token()
        self._store(token, info)
        return Sensitive(token), info

    def create_root(self, display_name: str = "root") -> tuple[Sensitive[str], TokenInfo]:
        """Issue a root token: every capability on ``*``, no expiry."""
        info = TokenInfo(
            accessor=self._random(16).hex(),
            display_name=_check_display_name(display_name),
            paths=("*",),
            capabilities=CAPABILITIES,
            created_at=self._clock.now(),
            expires_at=None,
            parent=None,
            root=True,
        )
        token = self._new_token()
        self._store(token, info)
        return Sensitive(token), info

    # -- authenticate and look up ----------------------------------------------------
    def _find(self, token: str) -> tuple[str, TokenInfo] | None:
        if (
            not isinstance(token, str)
            or len(token) != _TOKEN_LENGTH
            or not token.startswith(TOKEN_PREFIX)
        ):
            return None
        generation = self._generation  # before the barrier's seal check, below
        digest = self._hash(token)
        key = TOKENS + digest
        cached = self._cache.get(digest)
        mono = self._clock.monotonic()
        record: bytes | None = None
        if cached is not None:
            if not self._revalidate:
                if mono - cached[1] < self._cache_seconds:
                    return digest, cached[0]
            else:
                record = self._secure.get_record(key)
                if record is not None and (record is cached[2] or record == cached[2]):
                    return digest, cached[0]
        if record is None:
            record = self._secure.get_record(key)
        if record is None:
            self._cache.pop(digest, None)
            return None
        info = _loads(self._secure.open_record(key, record))
        if len(self._cache) >= _MAX_CACHE:
            self._cache.clear()
        self._cache[digest] = (info, mono, record)
        if self._generation != generation:  # sealed since the record was read: keep nothing
            self._cache.pop(digest, None)
        return digest, info

    def authenticate(self, token: str) -> TokenInfo:
        """The info of a valid token; ``AuthenticationError`` otherwise (no detail)."""
        found = self._find(token)
        if found is None or found[1].expired(self._clock.now()):
            raise AuthenticationError
        return found[1]

    def lookup_token(self, token: str) -> TokenInfo:
        """The info of ``token`` even if expired; ``NotFoundError`` if unknown or revoked."""
        found = self._find(token)
        if found is None:
            raise NotFoundError("no such token")
        return found[1]

    def lookup(self, accessor: str) -> TokenInfo:
        """The info of the token with ``accessor``; ``NotFoundError`` if unknown or revoked."""
        if not isinstance(accessor, str) or not _ACCESSOR.fullmatch(accessor):
            raise NotFoundError(NO_SUCH_ACCESSOR)
        digest = self._secure.get(ACCESSORS + accessor)
        if digest is None:
            raise NotFoundError(NO_SUCH_ACCESSOR)
        raw = self._secure.get(TOKENS + digest.decode("ascii"))
        if raw is None:
            raise NotFoundError(NO_SUCH_ACCESSOR)
        return _loads(raw)

    def is_descendant(self, info: TokenInfo, ancestor: str) -> bool:
        """Whether ``info`` was created (directly or not) by the token ``ancestor``."""
        parent = info.parent
        seen = 0
        while parent is not None and seen < 64:
            if parent == ancestor:
                return True
            try:
                parent = self.lookup(parent).parent
            except NotFoundError:
                return False
            seen += 1
        return False

    # -- revoke ------------------------------------------------------------------------
    def _children(self, accessor: str) -> list[str]:
        prefix = f"{CHILDREN}{accessor}/"
        found: list[str] = []
        after = ""
        while True:
            page = self._secure.list(prefix, after=after, limit=1000)
            found += [key[len(prefix) :] for key in page.keys]
            if page.next_after is None:
                return found
            after = page.next_after

    def purge_expired(self) -> int:
        """Delete the records of every token past its expiry; returns how many.

        Expired tokens already fail ``authenticate``; this reclaims their
        records, the links to their children (which expire no later) and the
        link from their parent. Each token goes in its own batch, conditioned
        on its accessor record, so a token revoked or purged meanwhile by
        another process is skipped; a record that cannot be read is left alone.
        """
        now = self._clock.now()
        purged = 0
        after = ""
        while True:
            page = self._secure.list(ACCESSORS, after=after, limit=500)
            for key in page.keys:
                if self._purge_if_expired(key[len(ACCESSORS) :], now):
                    purged += 1
            if page.next_after is None:
                return purged
            after = page.next_after

    def _purge_if_expired(self, accessor: str, now: dt.datetime) -> bool:
        try:
            digest, etag = self._secure.get_with_etag(ACCESSORS + accessor)
            if digest is None or etag is None:
                return False
            text = digest.decode("ascii")
            raw = self._secure.get(TOKENS + text)
            info = _loads(raw) if raw is not None else None  # None: an orphaned accessor
        except SealedError:
            raise
        except (MedsecretsError, ValueError):  # unreadable (damaged, restored wrongly): kept
            return False
        if info is not None and (info.expires_at is None or info.expires_at > now):
            return False
        ops: list[Operation] = [
            Expect(ACCESSORS + accessor, etag),
            Delete(TOKENS + text),
            Delete(ACCESSORS + accessor),
        ]
        ops += [Delete(f"{CHILDREN}{accessor}/{child}") for child in self._children(accessor)]
        if info is not None and info.parent is not None:
            ops.append(Delete(f"{CHILDREN}{info.parent}/{accessor}"))
        try:
            self._secure.batch(ops)
        except ConflictError:
            return False
        self._cache.pop(text, None)
        return True

    def revoke(self, accessor: str) -> None:
        """Revoke the token with ``accessor`` and every descendant.

        One batch deletes the token and the descendants found; a child created
        meanwhile (its creation committed after the children were listed) is
        found by listing again once that batch is done, and revoked in turn:
        a creation is conditioned on its parent's record, so once a token is
        deleted no child of it can appear, and the passes end. ``NotFoundError``
        if no such token exists.
        """
        root = self.lookup(accessor)
        seen: set[str] = set()
        ops: list[Operation] = []
        if root.parent is not None:
            ops.append(Delete(f"{CHILDREN}{root.parent}/{accessor}"))
        pending = [accessor]
        while pending:
            digests = self._revoke_pass(pending, seen, ops)
            self._secure.batch(ops)
            for text in digests:
                self._cache.pop(text, None)
            # A child whose creation committed before that batch but after its parent's
            # children were listed: its link is still under the deleted parent.
            late = [
                (current, child)
                for current in seen
                for child in self._children(current)
                if child not in seen
            ]
            ops = [Delete(f"{CHILDREN}{parent}/{child}") for parent, child in late]
            pending = [child for _, child in late]

    def _revoke_pass(self, start: list[str], seen: set[str], ops: list[Operation]) -> list[str]:
        """Add to ``ops`` the deletions of the tokens ``start`` and of their descendants not
        ``seen`` yet (then adds them to ``seen``); the digests to drop from the cache."""
        digests: list[str] = []
        queue = list(start)
        while queue:
            current = queue.pop()
            if current in seen:
                continue
            seen.add(current)
            digest = self._secure.get(ACCESSORS + current)
            if digest is not None:
                text = digest.decode("ascii")
                digests.append(text)
                ops += [Delete(TOKENS + text), Delete(ACCESSORS + current)]
            for child in self._children(current):
                ops.append(Delete(f"{CHILDREN}{current}/{child}"))
                queue.append(child)
        return digests
