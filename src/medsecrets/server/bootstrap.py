"""Assemble a ``Core`` from ``Settings``: storage, store, seal state, dev mode.

``build_core(settings)`` opens the storage backend and the ``SecretStore``,
then brings the seal to its start state:

- dev mode: the first start initialises the store with a key-file seal in the
  data directory (``unseal.key``, 0600) and issues a root token kept in
  ``<data_dir>/dev-root-token`` (0600) so that every start can print the
  same ``export MEDSECRETS_ADDR=... MEDSECRETS_TOKEN=...`` line; later starts
  auto-unseal and reuse the data and the token (a new root token is issued if
  the stored one no longer authenticates). Every dev start provisions the
  ``development`` environment from the catalog (existing secrets are kept).
- otherwise: a store initialised with a ``keyfile`` or ``awskms`` seal is
  auto-unsealed (a failure stops the start); a ``shamir`` store starts sealed
  and waits for ``POST /v1/sys/unseal``; an uninitialised store waits for
  ``POST /v1/sys/init``.

Problems raise ``ConfigError`` naming the setting (or the store's own error);
nothing here prints or logs a token, share or key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from medsecrets.auth.tokens import TokenStore
from medsecrets.catalog.loader import load_catalog
from medsecrets.catalog.model import Catalog
from medsecrets.core.audit import AuditAdmin, AuditHook
from medsecrets.core.handler import Core
from medsecrets.errors import AuthenticationError, ConfigError, MedsecretsError
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.seal.latch import LatchError, SealLatch, SharedLatch
from medsecrets.sensitive import Sensitive
from medsecrets.server.config import Settings
from medsecrets.server.coredumps import disable_core_dumps
from medsecrets.storage.base import StorageBackend
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

__all__ = [
    "DATA_DIR_LOCK",
    "DEV_ENVIRONMENT",
    "DEV_KEY_FILE",
    "DEV_TOKEN_FILE",
    "DevInfo",
    "build_core",
    "build_store",
    "claim_data_dir",
    "create_latch",
    "open_storage",
]

log = logging.getLogger("medsecrets.server")

DEV_ENVIRONMENT = "development"
DEV_KEY_FILE = "unseal.key"
DEV_TOKEN_FILE = "dev-root-token"  # noqa: S105 - a file name
_TOKEN_FILE_HEADER = "medsecrets-dev-root-token-v1:"  # noqa: S105 - a format tag


@dataclass(frozen=True, slots=True)
class DevInfo:
    """What a dev-mode start hands the operator: where to talk and with which token."""

    addr: str
    root_token: Sensitive[str] = field(repr=False)
    token_file: str
    data_dir: str
    first_start: bool

    def export_line(self) -> str:
        """The ready-to-paste shell line (it contains the root token: print it, never log it)."""
        return f"export MEDSECRETS_ADDR={self.addr} MEDSECRETS_TOKEN={self.root_token.reveal()}"


def _ensure_private_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        what = "a symbolic link to nothing" if os.path.islink(path) else "not a directory"
        raise ConfigError(f"setting 'data_dir': {path!r} is {what}") from None
    except OSError as exc:
        raise ConfigError(f"setting 'data_dir': cannot create {path!r} ({exc.strerror})") from None
    if not os.path.isdir(path):
        raise ConfigError(f"setting 'data_dir': {path!r} is not a directory")


DATA_DIR_LOCK = "server.lock"
_HELD: list[int] = []  # the descriptors holding this process's data directory locks


def claim_data_dir(settings: Settings) -> None:
    """Make ``data_dir`` this process's until it exits, before anything is written in it.

    Creates it 0700 if missing (a symbolic link is followed: the checks concern the
    directory it names), refuses one owned by another user (root's is fine) or writable
    by every user (another user could replace the store, the key file or the audit
    trail in it), then takes an exclusive ``flock`` on ``<data_dir>/server.lock``
    (0600), held until the process ends (the kernel drops it, also after a SIGKILL):
    a second server started on the same directory is refused before it writes
    anything. ``ConfigError`` naming ``data_dir`` for each refusal, and when the
    directory cannot be written.
    """
    path = settings.data_dir
    _ensure_private_dir(path)
    info = os.stat(path)
    if info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"setting 'data_dir': {path!r} belongs to another user (uid {info.st_uid}); "
            "it must be this server's own"
        )
    if info.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"setting 'data_dir': {path!r} is writable by every user "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 700 it"
        )
    lock = os.path.join(path, DATA_DIR_LOCK)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"setting 'data_dir': cannot write in {path!r} ({exc.strerror or exc})"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(
                f"setting 'data_dir': {path!r} is written by another process "
                "(another server on this data directory?)"
            ) from None
        raise ConfigError(
            f"setting 'data_dir': cannot lock {lock!r} ({exc.strerror or exc})"
        ) from None
    _HELD.append(fd)


def create_latch(settings: Settings) -> SharedLatch:
    """The operator-seal latch a multi-worker server shares with its workers, in its data
    directory (created 0700 if missing); ``ConfigError`` when it cannot be made."""
    _ensure_private_dir(settings.data_dir)
    try:
        return SharedLatch.create(settings.data_dir)
    except LatchError as exc:
        raise ConfigError(f"setting 'data_dir': {exc}") from None


def open_storage(settings: Settings) -> StorageBackend:
    """Open the configured storage backend (creating the data directory for SQLite);
    PostgreSQL's operations are bounded by ``storage.timeout``."""
    if settings.storage.type == "postgres":
        from medsecrets.storage.postgres import PostgresStorage

        return PostgresStorage(settings.storage.dsn, timeout=settings.storage.timeout)
    from medsecrets.storage.sqlite import SqliteStorage

    _ensure_private_dir(os.path.dirname(settings.storage.path))
    return SqliteStorage(settings.storage.path)


def _load_catalog(settings: Settings) -> Catalog | None:
    if settings.catalog_file is None:
        return None
    try:
        return load_catalog(settings.catalog_file)
    except MedsecretsError as exc:
        raise ConfigError(f"setting 'catalog_file': {exc.message}") from None


def build_store(settings: Settings, *, latch: SealLatch | None = None) -> SecretStore:
    """The ``SecretStore`` over the configured storage and catalog (sealed); ``latch``:
    the operator-seal latch shared with the server's other processes (``seal.latch``)."""
    catalog = _load_catalog(settings)
    storage = open_storage(settings)
    try:
        return SecretStore(storage, catalog=catalog, latch=latch)
    except BaseException:
        storage.close()
        raise


def build_core(
    settings: Settings,
    *,
    worker: bool = False,
    audit: Callable[[SecretStore], tuple[AuditHook, AuditAdmin | None]] | None = None,
    latch: SealLatch | None = None,
) -> tuple[Core, DevInfo | None]:
    """Assemble the core and bring the seal to its start state (see module docstring).

    ``worker=True`` (an extra worker process of a multi-worker server) only
    opens and auto-unseals: the first process did the dev-mode set-up. A
    worker given the server's ``latch`` stays sealed when it is set (a worker
    started again after an operator sealed the server).
    ``audit`` builds the core's audit hook and the operator's view of the
    audit trail from the started store (the server's audit stack); without it
    nothing is audited (tools and tests).
    """
    disable_core_dumps()  # before any key is in memory: a core file would hold it
    if settings.dev:
        _ensure_private_dir(settings.data_dir)
    store = build_store(settings, latch=latch)
    try:
        # SQLite reads are cached coherently across processes (the change stamp): a token
        # can be checked against its record on every use, so a revocation anywhere is
        # seen at once. PostgreSQL re-checks every few seconds (a query per use is too dear).
        storage = store.storage
        tokens = TokenStore(
            store.barrier, revalidate=isinstance(storage, SqliteStorage) and storage.read_cache
        )
        dev: DevInfo | None = None
        if settings.dev and not worker:
            dev = _dev_start(settings, store, tokens)
        else:
            _start(settings, store)
        hook, admin = audit(store) if audit is not None else (None, None)
        return Core(store, tokens, audit=hook, admin=admin, seal_type=settings.seal.type), dev
    except BaseException:
        store.close()
        raise


def _start(settings: Settings, store: SecretStore) -> None:
    status = store.status()
    if not status.initialized:
        log.warning("the store is not initialised: run `medsecrets operator init`")
        return
    configured = settings.seal.type
    if configured is not None and status.seal_type != configured:
        raise ConfigError(
            f"setting 'seal.type': configured {configured!r} but the store was "
            f"initialised with a {status.seal_type!r} seal"
        )
    if status.seal_type == "shamir":
        log.warning(
            "the store is sealed: submit unseal shares with `medsecrets operator unseal`",
            extra={"threshold": status.threshold},
        )
        return
    if store.latch.is_set():
        log.warning("the store stays sealed: an operator sealed the server")
        return
    store.auto_unseal()
    log.info("store unsealed", extra={"seal_type": status.seal_type})


def _dev_start(settings: Settings, store: SecretStore, tokens: TokenStore) -> DevInfo:
    token_file = os.path.join(settings.data_dir, DEV_TOKEN_FILE)
    status = store.status()
    first = not status.initialized
    if first:
        key_file = settings.seal.key_file or os.path.join(settings.data_dir, DEV_KEY_FILE)
        if os.path.lexists(key_file):  # left by a first start that died before init finished
            stale = f"{key_file}.stale-{secrets.token_hex(4)}"
            os.replace(key_file, stale)
            log.warning("dev mode: moved an unused key file aside", extra={"moved_to": stale})
        store.initialize(KeyFileSealConfig(path=key_file))
        log.info("dev mode: store initialised with a key-file seal", extra={"key_file": key_file})
    elif status.seal_type != "keyfile":
        raise ConfigError(
            f"setting 'data_dir': {settings.data_dir!r} holds a store with a "
            f"{status.seal_type!r} seal; dev mode needs a keyfile seal (use another --data-dir)"
        )
    else:
        store.auto_unseal()
    token = _read_token_file(token_file)
    if token is not None:
        try:
            tokens.authenticate(token.reveal())
        except AuthenticationError:
            token = None
    if token is None:
        token, _info = tokens.create_root(display_name="dev-root")
        _write_token_file(token_file, token)
    report = store.provision(DEV_ENVIRONMENT)
    log.info(
        "dev mode: environment provisioned",
        extra={"environment": DEV_ENVIRONMENT, "secrets_created": report.created},
    )
    return DevInfo(
        addr=settings.public_addr,
        root_token=token,
        token_file=token_file,
        data_dir=settings.data_dir,
        first_start=first,
    )


def _read_token_file(path: str) -> Sensitive[str] | None:
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(1024).strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        raise ConfigError(f"setting 'data_dir': cannot read the dev token file {path!r}") from None
    if not text.startswith(_TOKEN_FILE_HEADER):
        return None
    return Sensitive(text[len(_TOKEN_FILE_HEADER) :])


def _write_token_file(path: str, token: Sensitive[str]) -> None:
    """Write ``path`` atomically with mode 0600 (replacing an old token file)."""
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{_TOKEN_FILE_HEADER}{token.reveal()}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(
            f"setting 'data_dir': cannot write the dev token file ({exc.strerror})"
        ) from None
