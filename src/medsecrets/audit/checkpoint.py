"""Signed checkpoints: Ed25519 signatures over a point of an audit chain.

Every N records or M seconds the broker appends a *checkpoint record* to a
chain: ``AuditEvent(kind="checkpoint", extra=signer.extra(...))`` rendered by
``render_line`` like any other record, so the checkpoint is itself part of the
chain. Its fields (``CHECKPOINT_FIELDS``)::

    covers       seq of the last record the checkpoint vouches for: the record
                 just before it, so ``covers == seq - 1``
    covers_hash  that record's hash, so ``covers_hash == prev``
    key_id       first 16 hex characters of SHA-256 of the raw public key
    signature    base64 Ed25519 signature over ``checkpoint_message(...)``

The signature binds node, device, ``covers`` and ``covers_hash``; since
``covers_hash`` is a hash chain head, a valid signature vouches for every
record up to ``covers``. Someone who rewrites the log and recomputes every
hash cannot produce it without the private key.

An *exported checkpoint* is the checkpoint record line itself, appended to a
separate JSON-lines file (``export_checkpoint``) at another destination. The
last exported checkpoint is how ``verify`` detects a truncated tail: a log
must reach the seq of every exported checkpoint and hold that very record.
The export file must be a regular file: exporting never blocks the audit
writer on a FIFO or a device (it fails at once, which the lane logs), and
reading it back (``read_checkpoints``) never waits on one either. An export
is never torn: one that fails (a full disk) takes its partial line back out,
and a torn last line left by a crash mid-export is cut off by the next
export. Several processes may export to one file (one chain per worker
process): each export holds the file's ``flock`` while it repairs and
appends.

The private key is kept by the caller through the barrier
(``private_bytes``/``from_private_bytes``); it never appears in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from medsecrets.audit.file import _last_line
from medsecrets.audit.readback import numbered_lines
from medsecrets.audit.record import LineError, is_record, parse_line
from medsecrets.errors import InvalidRequest
from medsecrets.fdio import NotRegularFileError, open_regular, write_all
from medsecrets.sensitive import MASK

__all__ = [
    "CHECKPOINT_DOMAIN",
    "CHECKPOINT_EVERY",
    "EXPORT_LOCK_WAIT",
    "CheckpointSigner",
    "checkpoint_message",
    "export_checkpoint",
    "key_id_of",
    "load_public_key",
    "read_checkpoints",
    "verify_checkpoint",
]

CHECKPOINT_DOMAIN: Final = b"medsecrets-audit-checkpoint/v1"
"""First line of every signed message (domain separation)."""
CHECKPOINT_EVERY: Final = 1000
"""Default records between checkpoints (``audit.checkpoint_every``)."""

_EXPORT_FLAGS: Final = (
    os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
)
_NOT_REGULAR_EXPORT: Final = (
    "not a regular file (checkpoints are exported to a regular file only: a FIFO or a device "
    "could block the audit writer)"
)
EXPORT_LOCK_WAIT: Final = 1.0
"""Seconds an export waits for another process's export to the same file to finish."""

_LOG = logging.getLogger(__name__)


def checkpoint_message(*, node: str, device: str, covers: int, covers_hash: str) -> bytes:
    """The exact bytes a checkpoint signature covers (UTF-8, ``\\n``-separated)."""
    return b"\n".join(
        (CHECKPOINT_DOMAIN, node.encode(), device.encode(), b"%d" % covers, covers_hash.encode())
    )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    """Signs checkpoints with one Ed25519 private key (masked in ``repr``, not picklable)."""

    __slots__ = ("_key", "_key_id", "_public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self._key_id = key_id_of(self._public)

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> CheckpointSigner:
        """The signer for a raw 32-byte private key (as ``private_bytes`` returned it).

        Raises ``InvalidRequest`` (without the bytes) when ``raw`` is not a key.
        """
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(raw))
        except (ValueError, TypeError):
            raise InvalidRequest("not a raw 32-byte Ed25519 private key") from None

    @property
    def key_id(self) -> str:
        """``key_id_of`` the public key (goes into every checkpoint)."""
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, for ``verify``."""
        return self._public

    def public_key_pem(self) -> bytes:
        """The public key as PEM (SubjectPublicKeyInfo), to hand to verifiers."""
        return self._public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_bytes(self) -> bytes:
        """The raw 32-byte private key: store it only through the barrier."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def extra(self, *, node: str, device: str, covers: int, covers_hash: str) -> dict[str, object]:
        """The ``extra`` of a checkpoint ``AuditEvent`` vouching for ``covers``/``covers_hash``.

        ``node`` and ``device`` must be the ones the record is rendered with,
        ``covers``/``covers_hash`` the seq and hash of the chain head the
        checkpoint record is appended after.
        """
        message = checkpoint_message(
            node=node, device=device, covers=covers, covers_hash=covers_hash
        )
        return {
            "covers": covers,
            "covers_hash": covers_hash,
            "key_id": self._key_id,
            "signature": base64.b64encode(self._key.sign(message)).decode("ascii"),
        }

    def __repr__(self) -> str:
        return f"CheckpointSigner(key_id={self._key_id!r}, key={MASK})"

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a CheckpointSigner cannot be pickled")


def verify_checkpoint(record: Mapping[str, object], public_key: Ed25519PublicKey) -> bool:
    """Whether ``record`` is a checkpoint signed by ``public_key``.

    ``False`` (never an exception) for a record that is not a checkpoint,
    lacks a field, names another ``key_id`` or carries a bad signature.
    """
    node, device = record.get("node"), record.get("device")
    covers, covers_hash = record.get("covers"), record.get("covers_hash")
    signature = record.get("signature")
    if (
        record.get("kind", "checkpoint") != "checkpoint"
        or not isinstance(node, str)
        or not isinstance(device, str)
        or not isinstance(covers, int)
        or isinstance(covers, bool)
        or not isinstance(covers_hash, str)
        or not isinstance(signature, str)
        or record.get("key_id") != key_id_of(public_key)
    ):
        return False
    try:
        message = checkpoint_message(
            node=node, device=device, covers=covers, covers_hash=covers_hash
        )
        public_key.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def load_public_key(pem_or_hex: bytes | str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or 64 hex characters (raw).

    Raises ``InvalidRequest`` when the input is neither.
    """
    data = pem_or_hex.encode() if isinstance(pem_or_hex, str) else pem_or_hex
    data = data.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
            if isinstance(key, Ed25519PublicKey):
                return key
        else:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode("ascii")))
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise InvalidRequest("not an Ed25519 public key (PEM or 64 hex characters)")


def export_checkpoint(
    line: bytes,
    path: Path,
    *,
    _write: Callable[[int, bytes], None] = write_all,
    _fsync: Callable[[int], None] = os.fsync,
) -> None:
    """Append the checkpoint record ``line`` to the JSON-lines file ``path``, durably.

    The file is created 0600; the line is written whole (a ``\\n`` is added if
    missing) and fsync'd before this returns. Raises ``OSError`` when the
    write fails (the caller decides whether that is an alarm), at once for
    anything but a regular file, never waiting: a symlink (``ELOOP``), a FIFO
    without a reader (``ENXIO``), a directory, or a FIFO or device that could be
    opened (``NotRegularFileError``: a FIFO whose reader stops reading would
    block the write).

    Never torn (see module docstring): under the file's exclusive ``flock``
    (``BlockingIOError`` if another export holds it for more than
    ``EXPORT_LOCK_WAIT`` seconds), a last line without ``\\n`` is truncated away
    first, and a failed write or fsync truncates the file back to its size
    before it. ``_write`` and ``_fsync`` are seams for tests (to inject ``ENOSPC``).
    """
    if not line.endswith(b"\n"):
        line += b"\n"
    fd = os.open(path, _EXPORT_FLAGS, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(errno.EINVAL, _NOT_REGULAR_EXPORT, str(path))
        os.set_blocking(fd, True)
        _lock_export(fd, path)
        size = _whole_lines(fd, path)
        try:
            _write(fd, line)
            _fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # the write's own error is the one to report
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)  # releases the lock


def _lock_export(fd: int, path: Path) -> None:
    """Take the export file's exclusive lock, waiting ``EXPORT_LOCK_WAIT`` seconds at most."""
    deadline = time.monotonic() + EXPORT_LOCK_WAIT
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise BlockingIOError(
                    errno.EWOULDBLOCK, "another process is exporting to the file", str(path)
                ) from None
            time.sleep(0.005)


def _whole_lines(fd: int, path: Path) -> int:
    """The size of the (locked) export file once a torn last line is truncated away: a line
    without ``\\n`` is what an export cut short by a crash left (only exports write here)."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        _, size = _last_line(fd, size)
        _LOG.warning("exported checkpoints %s: truncating a torn last line", path)
        os.ftruncate(fd, size)
    return size


def read_checkpoints(
    path: Path, *, node: str | None = None, device: str | None = None
) -> list[dict[str, object]]:
    """The checkpoint records exported to ``path``, in file order.

    Only those of ``node``/``device`` when given (an export file may collect
    the checkpoints of several chains; ``verify`` treats every checkpoint it
    is given as belonging to the chain it checks). Raises ``LineError``
    naming the line number for a line that is not a checkpoint record or is
    over ``readback.MAX_LINE_BYTES`` (read no further), ``NotRegularFileError``
    for anything but a regular file (never waiting on a FIFO) and ``OSError``
    for a file that cannot be read.
    """
    found: list[dict[str, object]] = []
    with open_regular(path) as handle:
        for number, line in numbered_lines(handle, path):
            try:
                record = parse_line(line)
            except LineError as exc:
                raise LineError(f"{path}:{number}: {exc}") from None
            if not (is_record(record) and record["kind"] == "checkpoint"):
                raise LineError(f"{path}:{number}: not a checkpoint record")
            if (node is None or record.get("node") == node) and (
                device is None or record.get("device") == device
            ):
                found.append(record)
    return found
