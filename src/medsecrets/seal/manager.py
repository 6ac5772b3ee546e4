"""``SealManager``: initialise the store, protect the root key, unseal and rekey.

Storage layout (raw storage, outside the barrier, no plaintext secrets):

- ``core/seal-config``: JSON ``{"type", "shares", "threshold", ...}`` plus
  ``path`` (keyfile), ``key_id``/``region``/``endpoint_url`` (awskms) or
  ``share_set`` (shamir: the public SLIP-39 identifier of the current shares).
- ``core/root-key``: the root key, protected by the seal:

  * shamir / keyfile: ``0x01 || nonce (12) || AES-256-GCM(unseal key, root key,
    AAD "core/root-key")``; the unseal key is split into SLIP-39 shares
    (never stored) or kept in a 0600 key file;
  * awskms: the KMS ``CiphertextBlob`` of the root key, encryption context
    ``{"medsecrets": "root-key"}``.

- ``core/seal-config-pending`` / ``core/root-key-pending``: a Shamir rekey not
  verified yet (the same forms as the two above, for the new shares).

Init writes both, with the barrier's ``core/keyring`` and
``core/keyring-usage``, in one atomic batch (``Expect`` guarded: no keyring
yet), so concurrent inits cannot mix their keys. A Shamir rekey is two steps,
as Vault's rekey verification, so shares the operator never received can never
be the only ones: ``rekey`` stores the new pair as *pending* (one batch,
conditioned on the current pair) and hands out the new shares; the current
shares keep working until ``rekey_verify``, given a threshold of the NEW
shares, makes the pending pair current and deletes it (one batch, conditioned
on both pairs as read). A key-file or KMS rekey replaces the pair at once (no
shares to lose). The root key opens the barrier's keyring; rekeying changes how
the root key is protected, never the root key or the keyring.

Contract: thread-safe (one lock, never held while a key file is read or
written or AWS KMS is called: ``status`` answers at once); every share refusal is an
``InvalidShareError`` with a clear message and leaves progress unchanged,
except a failed combination at the threshold, which resets progress; no
message, repr or log ever contains a share, a key or the root key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medsecrets.barrier.aes_gcm import (
    PENDING_ROOT_KEY_KEY,
    PENDING_SEAL_CONFIG_KEY,
    ROOT_KEY_KEY,
    SEAL_CONFIG_KEY,
)
from medsecrets.barrier.base import Barrier
from medsecrets.clock import Clock, SystemClock
from medsecrets.errors import (
    AlreadyExistsError,
    AlreadyInitializedError,
    ConfigError,
    ConflictError,
    DecryptionError,
    InvalidRequest,
    InvalidShareError,
    NotInitializedError,
    PermissionDenied,
    SealedError,
    StorageError,
)
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    InitResult,
    KeyFileSealConfig,
    SealConfig,
    SealStatus,
    ShamirSealConfig,
    seal_type,
)
from medsecrets.seal.config import config_from_document, config_to_document
from medsecrets.seal.kms import SEAL_KMS_ATTEMPTS, SEAL_KMS_TIMEOUT, AwsKmsClient, KmsClient
from medsecrets.seal.shamir import ShareInfo, combine_shares, parse_share, split_secret
from medsecrets.sensitive import Sensitive
from medsecrets.storage.base import Delete, Expect, Operation, Put, StorageBackend

__all__ = ["KMS_CONTEXT", "PENDING_ROOT_KEY_KEY", "PENDING_SEAL_CONFIG_KEY", "SealManager"]

KEY_SIZE = 32
KMS_CONTEXT = {"medsecrets": "root-key"}
_RECORD_VERSION = 0x01
_NONCE_SIZE = 12
_ROOT_AAD = ROOT_KEY_KEY.encode()
_KEY_FILE_PREFIX = "medsecrets-unseal-key-v1:"
_CANCEL_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class _Loaded:
    config: SealConfig
    config_raw: bytes
    share_set: int | None
    root_record: bytes


def _wrap_root(unseal_key: Sensitive[bytes], root_key: Sensitive[bytes], nonce: bytes) -> bytes:
    sealed = AESGCM(unseal_key.reveal()).encrypt(nonce, root_key.reveal(), _ROOT_AAD)
    return bytes([_RECORD_VERSION]) + nonce + sealed


def _unwrap_root(unseal_key: Sensitive[bytes], record: bytes) -> Sensitive[bytes]:
    if len(record) < 1 + _NONCE_SIZE + 16 or record[0] != _RECORD_VERSION:
        raise DecryptionError
    try:
        aead = AESGCM(unseal_key.reveal())
        root = aead.decrypt(record[1 : 1 + _NONCE_SIZE], record[1 + _NONCE_SIZE :], _ROOT_AAD)
    except (InvalidTag, ValueError, TypeError):
        raise DecryptionError from None
    if len(root) != KEY_SIZE:
        raise DecryptionError
    return Sensitive(root)


def _write_key_file(path: str, key: Sensitive[bytes], suffix: str) -> None:
    """Create ``path`` (0600) holding ``key``, atomically; refuse if it exists."""
    if os.path.lexists(path):
        raise AlreadyExistsError(f"key file {path!r} exists: refusing to overwrite it")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{suffix}.tmp")
    content = (_KEY_FILE_PREFIX + base64.b64encode(key.reveal()).decode("ascii") + "\n").encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except (OSError, ValueError) as exc:  # ValueError: a path the OS cannot take (NUL)
        reason = exc.strerror if isinstance(exc, OSError) else "invalid path"
        raise ConfigError(f"cannot create key file in {directory!r}: {reason}") from None
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing file
        except FileExistsError:
            raise AlreadyExistsError(
                f"key file {path!r} exists: refusing to overwrite it"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create key file {path!r}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_key_file(path: str) -> Sensitive[bytes]:
    """Read an unseal key file; ``ConfigError`` if missing, malformed or not private."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"cannot open key file {path!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"key file {path!r} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"key file {path!r} has mode {mode:04o}: it must not be accessible "
                "by group or others (chmod 600)"
            )
        content = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        text = content.decode("ascii").strip()
        if not text.startswith(_KEY_FILE_PREFIX):
            raise ValueError
        key = base64.b64decode(text[len(_KEY_FILE_PREFIX) :], validate=True)
    except (UnicodeDecodeError, ValueError, binascii.Error):
        raise ConfigError(f"key file {path!r} is malformed") from None
    if len(key) != KEY_SIZE:
        raise ConfigError(f"key file {path!r} is malformed")
    return Sensitive(key)


def _default_kms(config: AwsKmsSealConfig) -> KmsClient:
    """The seal's KMS client: a short deadline (``SEAL_KMS_TIMEOUT``, ``SEAL_KMS_ATTEMPTS``),
    so a stalled KMS leaves a worker sealed for seconds, not minutes."""
    return AwsKmsClient(
        region=config.region,
        endpoint_url=config.endpoint_url,
        timeout=SEAL_KMS_TIMEOUT,
        max_attempts=SEAL_KMS_ATTEMPTS,
    )


class SealManager:
    """Initialise, unseal (Shamir shares, key file or AWS KMS), seal and rekey a store.

    ``storage`` is the raw backend (for ``core/seal-config`` and
    ``core/root-key``); ``barrier`` is the barrier over the same storage.
    ``kms_factory`` builds the KMS client for an ``AwsKmsSealConfig`` (default:
    ``AwsKmsClient`` with boto3's credential chain). ``random`` is the key source.
    """

    def __init__(
        self,
        storage: StorageBackend,
        barrier: Barrier,
        *,
        clock: Clock | None = None,
        kms_factory: Callable[[AwsKmsSealConfig], KmsClient] | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._storage = storage
        self._barrier = barrier
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._kms_factory = kms_factory if kms_factory is not None else _default_kms
        self._random = random
        self._lock = threading.RLock()
        self._generation = 0  # seals so far: an auto-unseal that saw a seal come does not install
        self._progress: list[tuple[int, Sensitive[str]]] = []

    def __repr__(self) -> str:
        return f"SealManager(sealed={self._barrier.sealed}, progress={len(self._progress)})"

    # ------------------------------------------------------------------ status

    def status(self) -> SealStatus:
        """The current seal state; works while sealed and before initialisation."""
        with self._lock:
            loaded = self._load()
            sealed = self._barrier.sealed
            term: int | None = None
            if not sealed:
                try:
                    term = self._barrier.keyring_info().term
                except SealedError:
                    sealed = True
            if loaded is None:
                return SealStatus(False, sealed, None, 0, 0, 0, term)
            config = loaded.config
            shares, threshold = (
                (config.shares, config.threshold)
                if isinstance(config, ShamirSealConfig)
                else (0, 0)
            )
            return SealStatus(
                initialized=self._barrier.initialized(),
                sealed=sealed,
                seal_type=seal_type(config),
                shares=shares,
                threshold=threshold,
                progress=len(self._progress),
                term=term,
                rekey_pending=isinstance(config, ShamirSealConfig) and self.rekey_pending(),
            )

    # ------------------------------------------------------------------ initialise

    def initialize(self, config: SealConfig) -> InitResult:
        """Create the root key and keyring, protect the root key with ``config``.

        Everything init stores is written by one batch (the barrier's
        ``initialize`` with the seal's records ``also``): the seal config, the
        root-key record, the keyring and its usage record, on the conditions that
        no keyring exists and that the seal config is still what was read. So
        exactly one of several concurrent inits (workers sharing a store) wins;
        the others get ``AlreadyInitializedError``, change nothing and remove the
        key file they created. A seal config without a keyring (an init
        interrupted before this was one batch) is replaced. Shamir shares are
        returned here once and never stored. Leaves the barrier unsealed.
        """
        if self._barrier.initialized():
            raise AlreadyInitializedError
        interrupted = self._storage.get(SEAL_CONFIG_KEY)
        root_key = self._new_key()
        # the key file or KMS call happens outside the lock: status() never waits on it
        doc, record, shares, created = self._protect(config, root_key)
        seal_ops: list[Operation] = [
            Expect(SEAL_CONFIG_KEY, interrupted),
            Put(SEAL_CONFIG_KEY, _dump(doc)),
            Put(ROOT_KEY_KEY, record),
        ]
        with self._lock:
            try:
                self._barrier.initialize(root_key, also=seal_ops)
            except AlreadyInitializedError:  # another init won: nothing of this one written
                _remove_key_file(created)
                raise
            except BaseException:
                if not self._committed(doc):  # an outcome we cannot know keeps the file
                    _remove_key_file(created)
                raise
            self._progress.clear()
        threshold = config.threshold if isinstance(config, ShamirSealConfig) else 0
        return InitResult(shares=shares, threshold=threshold, seal_type=seal_type(config))

    def _committed(self, doc: dict[str, str | int | None]) -> bool:
        """Whether the store holds this init's seal config, or it cannot be read (unknown)."""
        try:
            return self._storage.get(SEAL_CONFIG_KEY) == _dump(doc)
        except Exception:
            return True

    def _protect(
        self, config: SealConfig, root_key: Sensitive[bytes]
    ) -> tuple[dict[str, str | int | None], bytes, tuple[Sensitive[str], ...], str | None]:
        """(config document, root-key record, shares, key file created) for ``config``."""
        doc = config_to_document(config)
        if isinstance(config, ShamirSealConfig):
            unseal_key = self._new_key()
            shares = split_secret(unseal_key, shares=config.shares, threshold=config.threshold)
            doc["share_set"] = parse_share(shares[0]).identifier
            return doc, _wrap_root(unseal_key, root_key, self._nonce()), shares, None
        if isinstance(config, KeyFileSealConfig):
            unseal_key = self._new_key()
            try:
                _write_key_file(config.path, unseal_key, self._random(8).hex())
            except ConfigError as exc:  # the path came with the request: a bad request
                raise InvalidRequest(str(exc)) from None
            return doc, _wrap_root(unseal_key, root_key, self._nonce()), (), config.path
        record = self._kms_factory(config).encrypt(config.key_id, root_key, KMS_CONTEXT)
        return doc, record, (), None

    # ------------------------------------------------------------------ unseal

    def submit_share(self, share: str | Sensitive[str]) -> SealStatus:
        """Add one unseal share; at the threshold, combine and unseal.

        Refused with ``InvalidShareError`` (progress unchanged): a malformed
        share (unsealed too: a well-formed share given then is not used), a
        duplicate, a share of another share set. At the threshold, if
        the shares do not open the store, ``InvalidShareError`` and progress
        resets. Returns the status (``progress`` k of ``threshold``).
        """
        with self._lock:
            loaded = self._require_loaded()
            config = loaded.config
            if not isinstance(config, ShamirSealConfig):
                raise InvalidRequest(f"the {seal_type(config)} seal takes no shares: auto-unseal")
            info = parse_share(share)  # malformed is refused even when unsealed (not ignored)
            if not self._barrier.sealed:
                return self.status()
            self._check_share(info, config, loaded.share_set)
            if any(index == info.index for index, _ in self._progress):
                raise InvalidShareError("duplicate share: this share was submitted already")
            text = share if isinstance(share, Sensitive) else Sensitive(share)
            self._progress.append((info.index, text))
            if len(self._progress) < config.threshold:
                return self.status()
            submitted = [s for _, s in self._progress]
            self._progress.clear()
            try:
                root_key = _unwrap_root(combine_shares(submitted), loaded.root_record)
                self._barrier.unseal(root_key)
            except (InvalidShareError, DecryptionError):
                raise InvalidShareError(
                    "unseal failed: the shares do not open this store"
                ) from None
            return self.status()

    @staticmethod
    def _check_share(info: ShareInfo, config: ShamirSealConfig, share_set: int | None) -> None:
        if (
            info.identifier != share_set
            or info.threshold != config.threshold
            or info.group_threshold != 1
            or info.group_count != 1
        ):
            raise InvalidShareError(
                "this share belongs to a different share set (another store or an old rekey)"
            )

    def reset_unseal(self) -> SealStatus:
        """Forget the shares submitted so far.

        Open, as submitting shares is (``POST /v1/sys/unseal {"reset": true}``, as
        Vault's ``sys/unseal`` reset): while sealed no token can be checked, so anyone
        who reaches the port can reset an operator's progress (a nuisance, never a
        disclosure: progress is a count, and shares are never echoed, logged or kept
        past the threshold). Keep the port from untrusted networks while unsealing.
        """
        with self._lock:
            self._progress.clear()
            return self.status()

    def auto_unseal(self, *, allowed: Callable[[], bool] | None = None) -> SealStatus:
        """Unseal with the key file or AWS KMS (not for shamir).

        The key file must not be readable by group or others (``ConfigError``);
        a key that does not open the store raises ``DecryptionError``. The key
        file is read and KMS is called without the lock (``status`` and ``seal``
        never wait on them); the lock is taken only to install the root key, and
        not if a ``seal`` came meanwhile (the seal wins: the answer is sealed) or
        ``allowed()`` (checked under the lock) is false (``PermissionDenied``).
        """
        with self._lock:
            generation = self._generation
        loaded = self._require_loaded()
        if isinstance(loaded.config, ShamirSealConfig):
            raise InvalidRequest("the shamir seal cannot auto-unseal: submit shares")
        if not self._barrier.sealed:
            return self.status()
        root_key = self._recover_root(loaded)
        with self._lock:
            if self._barrier.sealed and self._generation == generation:
                if allowed is not None and not allowed():
                    raise PermissionDenied("sealed by an operator")
                self._barrier.unseal(root_key)
            return self.status()

    def _recover_root(self, loaded: _Loaded) -> Sensitive[bytes]:
        config = loaded.config
        if isinstance(config, KeyFileSealConfig):
            return _unwrap_root(_read_key_file(config.path), loaded.root_record)
        if isinstance(config, AwsKmsSealConfig):
            kms = self._kms_factory(config)
            root = kms.decrypt(loaded.root_record, KMS_CONTEXT, key_id=config.key_id)
            if len(root) != KEY_SIZE:
                raise DecryptionError
            return root
        raise InvalidRequest("the shamir seal needs shares")

    def seal(self) -> SealStatus:
        """Seal the barrier (drop its references to key material) and forget unseal progress;
        an auto-unseal still reading its key (KMS, key file) then leaves it sealed."""
        with self._lock:
            self._generation += 1
            self._barrier.seal()
            self._progress.clear()
            return self.status()

    # ------------------------------------------------------------------ rekey

    def rekey(
        self, current_shares: Sequence[str | Sensitive[str]], *, shares: int, threshold: int
    ) -> InitResult:
        """Shamir: make a new unseal key and its shares, pending until ``rekey_verify``.

        Needs a threshold of the current shares (checked like ``submit_share``:
        ``InvalidShareError``, nothing stored). Stores the new seal config and
        root-key record as pending (one batch, conditioned on the current pair
        being what was read: else ``ConflictError``), replacing any pending
        rekey, and returns the new shares (``verify`` true), never stored. The
        current shares keep working (unseal, another rekey) until the new ones
        are verified; the root key, keyring and data are untouched.
        """
        new_config = ShamirSealConfig(shares=shares, threshold=threshold)
        with self._lock:
            loaded = self._require_loaded()
            config = loaded.config
            if not isinstance(config, ShamirSealConfig):
                raise InvalidRequest(f"the {seal_type(config)} seal has no shares to rekey")
            root_key = self._open_with(loaded, current_shares, "rekey", "the current set")
            doc, record, new_shares, _ = self._protect(new_config, root_key)
            self._replace(loaded, doc, record, pending=True)
            return InitResult(
                shares=new_shares, threshold=new_config.threshold, seal_type="shamir", verify=True
            )

    def rekey_verify(self, new_shares: Sequence[str | Sensitive[str]]) -> SealStatus:
        """Shamir: finish a pending rekey with a threshold of its NEW shares.

        Refused, nothing changed: ``InvalidRequest`` when no rekey is pending;
        ``InvalidShareError`` for a malformed share, a share of another set (the
        current shares included), a duplicate, too few shares, or shares that do
        not open the pending record. Then one batch, conditioned on the current
        and pending pairs being what was read (else ``ConflictError``), makes the
        pending pair current and deletes it: from then on only the new shares
        work. Resets unseal progress; returns the status.
        """
        with self._lock:
            loaded = self._require_loaded()
            pending = self._load_pending()
            if pending is None:
                raise InvalidRequest("no rekey is pending: start one with POST /v1/sys/rekey")
            self._open_with(pending, new_shares, "rekey verification", "the new set")
            try:
                self._storage.batch(
                    [
                        Expect(SEAL_CONFIG_KEY, loaded.config_raw),
                        Expect(ROOT_KEY_KEY, loaded.root_record),
                        Expect(PENDING_SEAL_CONFIG_KEY, pending.config_raw),
                        Expect(PENDING_ROOT_KEY_KEY, pending.root_record),
                        Put(SEAL_CONFIG_KEY, pending.config_raw),
                        Put(ROOT_KEY_KEY, pending.root_record),
                        Delete(PENDING_SEAL_CONFIG_KEY),
                        Delete(PENDING_ROOT_KEY_KEY),
                    ]
                )
            except ConflictError:
                raise ConflictError("the seal changed concurrently: retry") from None
            self._progress.clear()
            return self.status()

    def rekey_cancel(self) -> bool:
        """Drop a pending rekey (its shares never work); ``True`` if this call dropped one.

        Idempotent; the current shares are untouched. The deletion is conditioned on the
        pending pair read, so a verify by another node that lands in between (the pending
        pair became current) is answered ``False``, never "cancelled"; a pair replaced
        meanwhile (another node's rekey) is read again and dropped. ``ConflictError`` only
        if the pair keeps changing (``_CANCEL_ATTEMPTS`` reads)."""
        keys = (PENDING_SEAL_CONFIG_KEY, PENDING_ROOT_KEY_KEY)
        with self._lock:
            for _ in range(_CANCEL_ATTEMPTS):
                read = [(key, self._storage.get(key)) for key in keys]
                if all(value is None for _, value in read):
                    return False
                ops: list[Operation] = [Expect(key, value) for key, value in read]
                try:
                    self._storage.batch([*ops, *(Delete(key) for key in keys)])
                except ConflictError:
                    continue
                return True
        raise ConflictError("the seal changed concurrently: retry")

    def rekey_pending(self) -> bool:
        """Whether a Shamir rekey waits for verification."""
        return self._storage.get(PENDING_SEAL_CONFIG_KEY) is not None

    def _open_with(
        self, loaded: _Loaded, shares: Sequence[str | Sensitive[str]], what: str, of: str
    ) -> Sensitive[bytes]:
        """The root key from a threshold of ``shares`` of ``loaded``'s (Shamir) share set;
        ``InvalidShareError`` (naming ``what`` and ``of``) otherwise."""
        config = loaded.config
        if not isinstance(config, ShamirSealConfig):
            raise InvalidRequest(f"the {seal_type(config)} seal has no shares")
        chosen: dict[int, str | Sensitive[str]] = {}
        for share in shares:
            info = parse_share(share)
            self._check_share(info, config, loaded.share_set)
            if info.index in chosen:
                raise InvalidShareError("duplicate share: the same share was given twice")
            chosen[info.index] = share
        if len(chosen) < config.threshold:
            raise InvalidShareError(
                f"{what} needs {config.threshold} shares of {of}, got {len(chosen)}"
            )
        try:
            return _unwrap_root(
                combine_shares(list(chosen.values())[: config.threshold]), loaded.root_record
            )
        except (InvalidShareError, DecryptionError):
            raise InvalidShareError(f"{what} failed: the shares do not open this store") from None

    def rekey_keyfile(self, new_path: str) -> InitResult:
        """Keyfile: move the root key under a fresh unseal key in a new file ``new_path``.

        Reads the current key file (it is the credential). The old file no
        longer opens the store afterwards; deleting it is left to the operator.
        """
        new_config = KeyFileSealConfig(new_path)
        loaded = self._require_loaded()
        if not isinstance(loaded.config, KeyFileSealConfig):
            raise InvalidRequest(f"the {seal_type(loaded.config)} seal has no key file")
        root_key = self._recover_root(loaded)  # file I/O outside the lock, as auto_unseal
        doc, record, _, created = self._protect(new_config, root_key)
        try:
            self._replace(loaded, doc, record)  # conditioned on what was loaded
        except ConflictError:
            _remove_key_file(created)
            raise
        return InitResult(shares=(), threshold=0, seal_type="keyfile")

    def rekey_awskms(
        self, key_id: str, *, region: str | None = None, endpoint_url: str | None = None
    ) -> InitResult:
        """AWS KMS: re-encrypt the root key under ``key_id`` (region/endpoint default
        to the current ones). Needs decrypt access to the current key."""
        loaded = self._require_loaded()
        current = loaded.config
        if not isinstance(current, AwsKmsSealConfig):
            raise InvalidRequest(f"the {seal_type(current)} seal does not use AWS KMS")
        new_config = AwsKmsSealConfig(
            key_id=key_id,
            region=region if region is not None else current.region,
            endpoint_url=endpoint_url if endpoint_url is not None else current.endpoint_url,
        )
        root_key = self._recover_root(loaded)  # KMS calls outside the lock, as auto_unseal
        doc, record, _, _ = self._protect(new_config, root_key)
        self._replace(loaded, doc, record)  # conditioned on what was loaded
        return InitResult(shares=(), threshold=0, seal_type="awskms")

    def _replace(
        self,
        loaded: _Loaded,
        doc: dict[str, str | int | None],
        record: bytes,
        *,
        pending: bool = False,
    ) -> None:
        """Write the seal config ``doc`` and root-key ``record`` in one batch, conditioned
        on the current pair being ``loaded``'s (else ``ConflictError``): as the current pair
        (unseal progress reset), or with ``pending`` beside it, for ``rekey_verify``."""
        config_key, root_key = (
            (PENDING_SEAL_CONFIG_KEY, PENDING_ROOT_KEY_KEY)
            if pending
            else (SEAL_CONFIG_KEY, ROOT_KEY_KEY)
        )
        with self._lock:
            try:
                self._storage.batch(
                    [
                        Expect(SEAL_CONFIG_KEY, loaded.config_raw),
                        Expect(ROOT_KEY_KEY, loaded.root_record),
                        Put(config_key, _dump(doc)),
                        Put(root_key, record),
                    ]
                )
            except ConflictError:
                raise ConflictError("the seal changed concurrently: retry") from None
            if not pending:
                self._progress.clear()

    # ------------------------------------------------------------------ internals

    def _new_key(self) -> Sensitive[bytes]:
        key = self._random(KEY_SIZE)
        if len(key) != KEY_SIZE:
            raise ValueError("random source returned the wrong length")
        return Sensitive(bytes(key))

    def _nonce(self) -> bytes:
        nonce = self._random(_NONCE_SIZE)
        if len(nonce) != _NONCE_SIZE:
            raise ValueError("random source returned the wrong length")
        return bytes(nonce)

    def _load(self) -> _Loaded | None:
        return self._load_pair(SEAL_CONFIG_KEY, ROOT_KEY_KEY)

    def _load_pending(self) -> _Loaded | None:
        return self._load_pair(PENDING_SEAL_CONFIG_KEY, PENDING_ROOT_KEY_KEY)

    def _load_pair(self, config_key: str, record_key: str) -> _Loaded | None:
        raw = self._storage.get(config_key)
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise StorageError(f"{config_key}: not JSON") from None
        config = config_from_document(doc, extra=frozenset({"share_set"}))
        share_set = doc.get("share_set")
        if isinstance(config, ShamirSealConfig) and type(share_set) is not int:
            raise StorageError(f"{config_key}: share_set missing")
        record = self._storage.get(record_key)
        if record is None:
            raise StorageError(f"seal: {record_key} is missing")
        return _Loaded(config, raw, share_set if type(share_set) is int else None, record)

    def _require_loaded(self) -> _Loaded:
        loaded = self._load()
        if loaded is None:
            raise NotInitializedError
        return loaded


def _dump(doc: dict[str, str | int | None]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _remove_key_file(path: str | None) -> None:
    """Remove a key file this process created for a seal that was not stored."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)
