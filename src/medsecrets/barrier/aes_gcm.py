"""``AesGcmBarrier``: the AES-256-GCM barrier over an untrusted ``StorageBackend``.

Record format (every value the barrier writes)::

    header = version (1 byte, 0x01) || key term (uint32 big-endian) || nonce (12 bytes)
    record = header || AES-256-GCM ciphertext || 16-byte tag
    AAD    = version || term || storage key (UTF-8)

so a record moved to another key, or with its version or term changed, fails
authentication. Every failure to open a record raises the opaque
``DecryptionError`` (``from None``).

The keyring lives at ``core/keyring``, sealed under the root key with the same
format and term 0. ``core/keyring-usage`` (also under the root key, term 0)
holds how many encryptions of the active term have been *reserved*: a node
reserves a block of ``usage_reservation`` encryptions (check-and-set on the
record) before using them, so after a crash or a restart the count only goes
up, and several nodes sharing one store count together. When the reserved
count reaches ``rotation_threshold`` a new term is added automatically.
Every write that encrypts also expects ``core/keyring`` unchanged (the same atomic
batch), so after a rotation on any node no record commits under an older term.

Reserved keys (``core/keyring``, ``core/keyring-usage``, ``core/seal-config``,
``core/root-key``) cannot be read, written or deleted through the
``SecureStorage`` methods (``InvalidRequest``) and are hidden from ``list``.

Thread-safety: reads take no lock (they use an immutable snapshot of the
unsealed state); encryptions take a short lock to count, and storage writes
for reservation and rotation happen under that lock.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import struct
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.barrier.keyring import KEY_SIZE, Keyring
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import (
    AlreadyInitializedError,
    ConflictError,
    DecryptionError,
    InvalidRequest,
    NotInitializedError,
    SealedError,
    StorageError,
)
from medsecrets.schema.system import KeyringInfo
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import (
    Delete,
    Expect,
    ListPage,
    Operation,
    Put,
    StorageBackend,
    check_key,
)

__all__ = [
    "HEADER_SIZE",
    "KEYRING_KEY",
    "KEYRING_USAGE_KEY",
    "NONCE_SIZE",
    "PENDING_ROOT_KEY_KEY",
    "PENDING_SEAL_CONFIG_KEY",
    "RESERVED_KEYS",
    "ROOT_KEY_KEY",
    "SEAL_CONFIG_KEY",
    "VERSION",
    "AesGcmBarrier",
]

VERSION = 0x01
NONCE_SIZE = 12
TAG_SIZE = 16
_PREFIX = struct.Struct(">BI")
HEADER_SIZE = _PREFIX.size + NONCE_SIZE  # 17
_ROOT_TERM = 0
_MAX_CONFLICT_RETRIES = 64

KEYRING_KEY = "core/keyring"
KEYRING_USAGE_KEY = "core/keyring-usage"
SEAL_CONFIG_KEY = "core/seal-config"
ROOT_KEY_KEY = "core/root-key"
PENDING_SEAL_CONFIG_KEY = "core/seal-config-pending"
PENDING_ROOT_KEY_KEY = "core/root-key-pending"
RESERVED_KEYS = frozenset(
    {
        KEYRING_KEY,
        KEYRING_USAGE_KEY,
        SEAL_CONFIG_KEY,
        ROOT_KEY_KEY,
        PENDING_SEAL_CONFIG_KEY,
        PENDING_ROOT_KEY_KEY,
    }
)


def _same(forget: Callable[[], None]) -> Callable[[], None]:
    return forget


def _seal_record(aead: AESGCM, term: int, nonce: bytes, key: str, plaintext: bytes) -> bytes:
    prefix = _PREFIX.pack(VERSION, term)
    return prefix + nonce + aead.encrypt(nonce, plaintext, prefix + key.encode())


def _record_term(record: bytes) -> int:
    """The term in ``record``'s header; ``DecryptionError`` if the header is bad."""
    if len(record) < HEADER_SIZE + TAG_SIZE or record[0] != VERSION:
        raise DecryptionError
    term: int = _PREFIX.unpack_from(record)[1]
    return term


def _open_record(aead: AESGCM, key: str, record: bytes) -> bytes:
    try:
        return aead.decrypt(
            record[_PREFIX.size : HEADER_SIZE],
            record[HEADER_SIZE:],
            record[: _PREFIX.size] + key.encode(),
        )
    except (InvalidTag, ValueError, OverflowError):
        raise DecryptionError from None


@dataclass(frozen=True, slots=True)
class _Unsealed:
    """Immutable snapshot of the key material while unsealed (never in a repr)."""

    root: AESGCM
    keyring: Keyring
    keyring_raw: bytes
    aeads: dict[int, AESGCM]

    def __repr__(self) -> str:
        return f"_Unsealed(keyring={self.keyring!r})"


@dataclass(frozen=True, slots=True)
class _Usage:
    term: int
    reserved: int


class AesGcmBarrier:
    """AES-256-GCM ``Barrier`` (see the module docstring for the format and contract).

    ``rotation_threshold``: encryptions under one term before a new term is
    added automatically. ``usage_reservation``: encryptions reserved per write
    of ``core/keyring-usage`` (default: threshold/16384, between 1 and 65536).
    ``random``: the source of keys and nonces (tests inject a fixed one).
    """

    def __init__(
        self,
        storage: StorageBackend,
        *,
        clock: Clock | None = None,
        rotation_threshold: int = 2**30,
        random: Callable[[int], bytes] = os.urandom,
        usage_reservation: int | None = None,
    ) -> None:
        if rotation_threshold < 1:
            raise ValueError("rotation_threshold must be at least 1")
        if usage_reservation is None:
            usage_reservation = max(1, min(65536, rotation_threshold // 16384))
        if usage_reservation < 1:
            raise ValueError("usage_reservation must be at least 1")
        self._storage = storage
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._threshold = rotation_threshold
        self._reservation = usage_reservation
        self._random = random
        self._lock = threading.RLock()
        self._state: _Unsealed | None = None
        self._on_seal: list[Callable[[], Callable[[], None] | None]] = []
        # Encryptions of the active term: the next index to use and the end of
        # the block this node has reserved in storage (guarded by ``_lock``).
        self._count = 0
        self._limit = 0

    def __repr__(self) -> str:
        state = "sealed" if self._state is None else f"term={self._state.keyring.active.term}"
        return f"AesGcmBarrier({state}, rotation_threshold={self._threshold})"

    # ------------------------------------------------------------------ lifecycle

    @property
    def sealed(self) -> bool:
        """Whether the barrier holds no key material."""
        return self._state is None

    def initialized(self) -> bool:
        """Whether ``core/keyring`` exists (works while sealed)."""
        return self._storage.get(KEYRING_KEY) is not None

    def initialize(self, root_key: Sensitive[bytes], also: Sequence[Operation] = ()) -> None:
        """Create keyring term 1 under ``root_key``; leaves the barrier unsealed.

        ``also`` (the seal's records and conditions) is applied in the same atomic
        batch, before the keyring's records, so an init is all or nothing.
        ``AlreadyInitializedError`` if a keyring exists or a condition in ``also``
        fails (checked atomically: nothing is written then).
        """
        root = self._root_aead(root_key)
        keyring = Keyring.new(self._new_key(), self._clock.now())
        keyring_raw = self._seal_root(root, KEYRING_KEY, keyring.serialize().reveal())
        usage = _Usage(keyring.active.term, 0)
        try:
            self._storage.batch(
                [
                    Expect(KEYRING_KEY, None),
                    *also,
                    Put(KEYRING_KEY, keyring_raw),
                    Put(KEYRING_USAGE_KEY, self._usage_record(root, usage)),
                ]
            )
        except ConflictError:
            raise AlreadyInitializedError from None
        with self._lock:
            self._install(root, keyring, keyring_raw, usage)

    def unseal(self, root_key: Sensitive[bytes]) -> None:
        """Load the keyring with ``root_key``; ``DecryptionError`` if it is wrong."""
        root = self._root_aead(root_key)
        with self._lock:
            keyring, keyring_raw = self._load_keyring(root)
            self._install(root, keyring, keyring_raw, self._load_usage(root))

    def seal(self) -> None:
        """Drop every reference to key material, then run the ``on_seal`` callbacks
        (outside the lock: they take their own). Idempotent."""
        with self._lock:
            self._state = None
            self._count = self._limit = 0
            listeners = tuple(self._on_seal)
        for listener in listeners:
            forget = listener()
            if forget is not None:
                forget()

    def on_seal(self, forget: Callable[[], None]) -> None:
        """Run ``forget`` after every ``seal`` (a bound method is held weakly)."""
        ref: Callable[[], Callable[[], None] | None]
        if inspect.ismethod(forget):
            ref = weakref.WeakMethod(forget)
        else:
            ref = functools.partial(_same, forget)
        with self._lock:
            self._on_seal = [r for r in self._on_seal if r() is not None]
            self._on_seal.append(ref)

    def rotate(self) -> int:
        """Add a keyring term; it encrypts from now on, every term decrypts. Returns it."""
        with self._lock:
            self._require()
            return self._rotate_locked()

    def keyring_info(self) -> KeyringInfo:
        """Public facts about the keyring (term, count, dates; never keys)."""
        with self._lock:
            state = self._require()
            return KeyringInfo(
                term=state.keyring.active.term,
                terms=len(state.keyring.terms),
                installed_at=state.keyring.active.installed_at,
                encryptions=self._count,
                rotation_threshold=self._threshold,
            )

    def change_root_key(self, new_root_key: Sensitive[bytes]) -> None:
        """Re-encrypt the keyring (and its usage record) under ``new_root_key``."""
        new_root = self._root_aead(new_root_key)
        with self._lock:
            state = self._require()
            old_root = state.root
            usage = self._load_usage(old_root)
            keyring_raw = self._seal_root(new_root, KEYRING_KEY, state.keyring.serialize().reveal())
            try:
                self._storage.batch(
                    [
                        Expect(KEYRING_KEY, state.keyring_raw),
                        Put(KEYRING_KEY, keyring_raw),
                        Put(KEYRING_USAGE_KEY, self._usage_record(new_root, usage)),
                    ]
                )
            except ConflictError:
                raise ConflictError("the keyring changed concurrently; retry") from None
            self._state = _Unsealed(new_root, state.keyring, keyring_raw, state.aeads)

    # --------------------------------------------------------------- SecureStorage

    def get(self, key: str) -> bytes | None:
        """The plaintext at ``key`` or ``None``."""
        record = self.get_record(key)
        return None if record is None else self.open_record(key, record)

    def get_with_etag(self, key: str) -> tuple[bytes | None, bytes | None]:
        """``(plaintext, etag)``; the etag is the raw record, for ``Expect(key, etag)``."""
        record = self.get_record(key)
        if record is None:
            return None, None
        return self.open_record(key, record), record

    def get_record(self, key: str) -> bytes | None:
        """The sealed record at ``key`` (its etag) without decrypting it."""
        if self._state is None:
            raise SealedError
        self._check_user_key(key)
        return self._storage.get(key)

    def open_record(self, key: str, record: bytes) -> bytes:
        """Decrypt a record read from ``key``; ``DecryptionError`` if it is not that key's."""
        state = self._state
        if state is None:
            raise SealedError
        term = _record_term(record)
        aead = state.aeads.get(term)
        if aead is None:
            aead = self._aead_for_unknown_term(term)
        return _open_record(aead, key, record)

    def put(self, key: str, value: bytes) -> None:
        """Encrypt ``value`` bound to ``key`` and store it durably."""
        self._check_user_key(key)
        self.batch([Put(key, value)])

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when absent)."""
        self._require()
        self._check_user_key(key)
        self._storage.delete(key)

    def list(self, prefix: str = "", *, after: str = "", limit: int = 1000) -> ListPage:
        """Keys under ``prefix`` (reserved keys hidden), as ``StorageBackend.list``."""
        self._require()
        page = self._storage.list(prefix, after=after, limit=limit)
        if not any(k in RESERVED_KEYS for k in page.keys):
            return page
        keys = [k for k in page.keys if k not in RESERVED_KEYS]
        # Refill what the hidden keys took (there are only a few of them).
        while page.next_after is not None and len(keys) < limit:
            page = self._storage.list(prefix, after=page.next_after, limit=limit - len(keys))
            keys.extend(k for k in page.keys if k not in RESERVED_KEYS)
        return ListPage(tuple(keys), page.next_after)

    def batch(self, ops: Sequence[Operation]) -> dict[str, bytes]:
        """Encrypt every ``Put``; pass ``Delete`` and ``Expect`` through; apply atomically.

        Returns the etag (sealed record) of every key written, for later ``Expect``s.

        The batch also expects ``core/keyring`` to be the keyring this node encrypted
        with: after another node's rotation it reloads the keyring, encrypts again
        under the new term and retries, so no write commits under a term older than
        the stored keyring's newest (a node holding a reserved block of the old term
        included). A ``ConflictError`` with the keyring unchanged is the caller's.
        That expectation is a shared one (``Expect(shared=True)``): on PostgreSQL
        encrypting writes do not queue on the keyring row, while a rotation still
        waits for the checks in flight.
        """
        for op in ops:
            if isinstance(op, Put | Delete):
                self._check_user_key(op.key)
            elif not isinstance(op, Expect):
                raise InvalidRequest("batch operations must be Put, Delete or Expect")
        for _ in range(_MAX_CONFLICT_RETRIES):
            self._require()
            out: list[Operation] = []
            etags: dict[str, bytes] = {}
            for op in ops:
                if isinstance(op, Put):
                    sealed = etags[op.key] = self._encrypt(op.key, op.value)
                    out.append(Put(op.key, sealed))
                else:
                    out.append(op)
            state = self._require()  # the keyring the records were sealed under, unless
            active = state.keyring.active.term  # a rotation came between two of them
            if any(_record_term(record) != active for record in etags.values()):
                continue
            if etags:
                out.insert(0, Expect(KEYRING_KEY, state.keyring_raw, shared=True))
            try:
                self._storage.batch(out)
            except ConflictError:
                if not self._reload_if_rotated(state):
                    raise
                continue
            return etags
        raise ConflictError("the keyring changed too often during a write: retry")

    # ------------------------------------------------------------------ internals

    def _require(self) -> _Unsealed:
        state = self._state
        if state is None:
            raise SealedError
        return state

    @staticmethod
    def _check_user_key(key: str) -> None:
        check_key(key)
        if key in RESERVED_KEYS:
            raise InvalidRequest(f"storage key {key!r} is reserved for the barrier and seal")

    @staticmethod
    def _root_aead(root_key: Sensitive[bytes]) -> AESGCM:
        value = root_key.reveal()
        if not isinstance(value, bytes) or len(value) != KEY_SIZE:
            raise InvalidRequest("the root key must be 32 bytes")
        return AESGCM(value)

    def _new_key(self) -> Sensitive[bytes]:
        key = self._random(KEY_SIZE)
        if len(key) != KEY_SIZE:
            raise ValueError("random source returned the wrong length")
        return Sensitive(bytes(key))

    def _nonce(self) -> bytes:
        nonce = self._random(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError("random source returned the wrong length")
        return bytes(nonce)

    def _seal_root(self, root: AESGCM, key: str, plaintext: bytes) -> bytes:
        return _seal_record(root, _ROOT_TERM, self._nonce(), key, plaintext)

    def _open_root(self, root: AESGCM, key: str, record: bytes) -> bytes:
        if _record_term(record) != _ROOT_TERM:
            raise DecryptionError
        return _open_record(root, key, record)

    def _usage_record(self, root: AESGCM, usage: _Usage) -> bytes:
        doc = json.dumps({"term": usage.term, "reserved": usage.reserved}).encode()
        return self._seal_root(root, KEYRING_USAGE_KEY, doc)

    def _parse_usage(self, root: AESGCM, record: bytes | None) -> _Usage | None:
        if record is None:
            return None
        plaintext = self._open_root(root, KEYRING_USAGE_KEY, record)
        try:
            doc = json.loads(plaintext)
        except ValueError:
            raise StorageError("keyring usage record is malformed") from None
        if not isinstance(doc, dict):
            raise StorageError("keyring usage record is malformed")
        term, reserved = doc.get("term"), doc.get("reserved")
        if type(term) is not int or type(reserved) is not int or reserved < 0:
            raise StorageError("keyring usage record is malformed")
        return _Usage(term, reserved)

    def _load_usage(self, root: AESGCM) -> _Usage:
        usage = self._parse_usage(root, self._storage.get(KEYRING_USAGE_KEY))
        return usage if usage is not None else _Usage(0, self._threshold)

    def _load_keyring(self, root: AESGCM) -> tuple[Keyring, bytes]:
        raw = self._storage.get(KEYRING_KEY)
        if raw is None:
            raise NotInitializedError
        return Keyring.deserialize(self._open_root(root, KEYRING_KEY, raw)), raw

    def _install(self, root: AESGCM, keyring: Keyring, raw: bytes, usage: _Usage) -> None:
        """Publish a new snapshot (caller holds ``_lock``)."""
        previous = self._state.aeads if self._state is not None else {}
        aeads = {t.term: previous.get(t.term) or AESGCM(t.key.reveal()) for t in keyring.terms}
        self._state = _Unsealed(root, keyring, raw, aeads)
        active = keyring.active.term
        # Conservative: every reserved encryption counts as used; no block held yet.
        self._count = usage.reserved if usage.term == active else self._threshold
        self._limit = self._count

    def _reload_if_rotated(self, seen: _Unsealed) -> bool:
        """After a conflicting write under ``seen``: whether the keyring changed since
        (another node rotated, or this one did meanwhile); a newer stored keyring is
        installed. ``False``: the keyring is what ``seen`` held."""
        with self._lock:
            state = self._require()
            if state.keyring_raw != seen.keyring_raw:
                return True
            raw = self._storage.get(KEYRING_KEY)
            if raw == state.keyring_raw:
                return False
            try:
                keyring, raw = self._load_keyring(state.root)
            except (DecryptionError, NotInitializedError, StorageError):
                raise DecryptionError from None
            if keyring.active.term >= state.keyring.active.term:
                self._install(state.root, keyring, raw, self._load_usage(state.root))
            return True

    def _aead_for_unknown_term(self, term: int) -> AESGCM:
        """Another node may have rotated: reload the keyring once, else fail opaquely."""
        with self._lock:
            state = self._require()
            if term not in state.aeads and term > state.keyring.active.term:
                try:
                    keyring, raw = self._load_keyring(state.root)
                except (DecryptionError, NotInitializedError, StorageError):
                    raise DecryptionError from None
                if keyring.active.term > state.keyring.active.term:
                    self._install(state.root, keyring, raw, self._load_usage(state.root))
            aead = self._require().aeads.get(term)
        if aead is None:
            raise DecryptionError
        return aead

    def _encrypt(self, key: str, plaintext: bytes) -> bytes:
        nonce = self._nonce()
        with self._lock:
            state = self._require()
            if self._count >= self._limit:
                self._reserve_locked()
                state = self._require()
            self._count += 1
            term = state.keyring.active.term
            aead = state.aeads[term]
        return _seal_record(aead, term, nonce, key, plaintext)

    def _reserve_locked(self) -> None:
        """Reserve the next block of encryptions for the active term, rotating at the threshold."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            state = self._require()
            active = state.keyring.active.term
            raw = self._storage.get(KEYRING_USAGE_KEY)
            usage = self._parse_usage(state.root, raw)
            if usage is not None and usage.term > active:
                keyring, keyring_raw = self._load_keyring(state.root)
                self._install(state.root, keyring, keyring_raw, usage)
                continue
            if usage is None or usage.term < active or usage.reserved >= self._threshold:
                self._rotate_locked(expected_term=active)
                continue
            new = _Usage(active, min(usage.reserved + self._reservation, self._threshold))
            try:
                self._storage.batch(
                    [
                        Expect(KEYRING_USAGE_KEY, raw),
                        Put(KEYRING_USAGE_KEY, self._usage_record(state.root, new)),
                    ]
                )
            except ConflictError:
                continue
            self._count, self._limit = usage.reserved, new.reserved
            return
        raise ConflictError("could not reserve keyring usage: too much contention")

    def _rotate_locked(self, expected_term: int | None = None) -> int:
        """Add a term (CAS on ``core/keyring``). With ``expected_term``, stop if another
        node already moved past it."""
        for _ in range(_MAX_CONFLICT_RETRIES):
            state = self._require()
            if expected_term is not None and state.keyring.active.term > expected_term:
                return state.keyring.active.term
            keyring = state.keyring.with_new_term(self._new_key(), self._clock.now())
            keyring_raw = self._seal_root(state.root, KEYRING_KEY, keyring.serialize().reveal())
            usage = _Usage(keyring.active.term, 0)
            try:
                self._storage.batch(
                    [
                        Expect(KEYRING_KEY, state.keyring_raw),
                        Put(KEYRING_KEY, keyring_raw),
                        Put(KEYRING_USAGE_KEY, self._usage_record(state.root, usage)),
                    ]
                )
            except ConflictError:
                current, current_raw = self._load_keyring(state.root)
                self._install(state.root, current, current_raw, self._load_usage(state.root))
                continue
            self._install(state.root, keyring, keyring_raw, usage)
            return keyring.active.term
        raise ConflictError("could not rotate the keyring: too much contention")
