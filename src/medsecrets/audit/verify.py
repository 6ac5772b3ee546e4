"""``verify``: check an audit chain for tampering and report the first bad record.

A chain verifies when, line after line:

1. the line has the record layout of ``record.py``, its ``prev`` and ``hash`` 64
   lowercase hex digits, and is at most ``readback.MAX_LINE_BYTES`` long, ``\\n``
   included, as every reader requires (else ``malformed line``);
2. its ``hash`` is the SHA-256 of the line without its hash (``hash mismatch``):
   a modified byte anywhere in a record is caught here;
3. its ``seq`` is one more than the record before (``sequence gap`` for a
   deleted or moved-up record, ``duplicate record`` for a repeated one,
   ``sequence goes backwards`` for a moved-down or replayed one);
4. its ``prev`` is the ``hash`` of the record before (``chain broken``);
   a record inserted between two others with a valid hash, ``prev`` and
   ``seq`` is only inconsistent with the record after it; that record then
   links to the one before the insertion, and the inserted line is reported
   (``inserted record``), not its innocent successor;
5. a checkpoint record covers the record right before it
   (``covers == seq - 1``, ``covers_hash == prev``) and, when ``public_key``
   is given, carries a valid signature (``bad checkpoint signature``):
   someone who rewrote the log and recomputed every hash fails here;
6. every *exported* checkpoint (``checkpoints``: records read back from the
   export destination, see ``checkpoint.read_checkpoints``) is in the log:
   the log reaches its seq (else ``truncated: ...``) and holds that very
   record (its hash; else ``log diverges from exported checkpoint``). With
   ``public_key``, exported checkpoints must carry valid signatures too;
7. with ``public_key``, at most ``unsigned_tail`` records follow the last
   signed checkpoint (``unsigned tail``): the server signs a checkpoint every
   ``audit.checkpoint_every`` records (``CHECKPOINT_EVERY``), and a signed
   checkpoint vouches for every record before it (its ``covers_hash`` is a
   chain head), so whoever rewrites a record and recomputes the hashes after
   it must drop every checkpoint from there on, leaving a long unsigned tail.
   Gaps between checkpoints earlier in the log (a server sealed for a while
   writes none: its signing key is behind the barrier) are covered by the
   next signed checkpoint and are not limited. ``unsigned_tail=0`` turns the
   rule off (a log copied while its server had long been sealed);
8. without ``decode``, plain and sealed lines mix only as an encrypted file
   device over a Shamir store writes them: its key is a secret read after the
   unseal, so every start writes the sealed spell's records plain (rendered
   without the HMAC key: ``accessor`` null, ``data`` null or ``SEALED_DATA``;
   no ``principal``: a sealed store authenticates nobody; never a checkpoint,
   whose signing key is sealed too; alerts hold no HMAC)
   and every record from the unseal on sealed. So a sealed line right after a
   plain record that is not such a record is ``mixed encryption`` (a record
   replaced by a "sealed" line no key opens would otherwise be checked for its
   place only; a device switched to encryption needs ``decode``), and so is a
   plain line after a sealed one that is not such a record
   (``PROBLEM_DOWNGRADE``: a record decrypted, forged or inserted in clear
   among sealed ones). What this cannot tell without the key: a sealed line
   carries its ``prev``/``seq``/``hash`` in clear but nothing binds them to
   its content, so a sealed line replaced by another "sealed" one, or by (or
   preceded by) plain records like a sealed spell's with the next sealed
   line's ``prev``/``seq`` edited to follow, is found only with ``decode``
   (they are the associated data of its encryption). The report counts the
   sealed lines (``sealed``), and the plain stretches after sealed lines and
   their records (``plain_stretches``, ``plain_stretch_records``). With
   ``public_key`` and no ``decode``, a sealed line is ``encrypted record``
   (its checkpoints' signatures cannot be checked without the key).

Verification stops at the first bad record: after it nothing chains.

**Where a chain starts.** With ``start`` (a ``ChainHead``), the first line
must follow it: ``ChainHead()`` for a log that begins the chain, or the head of
the previous (rotated) file. With ``start=None`` the first line's ``prev`` and
``seq`` are *trusted*, so a file whose head was rotated away verifies on its
own; a record with ``seq`` 1 must still have ``prev == GENESIS``. The price:
with ``start=None``, deleting the first lines of a log is indistinguishable
from rotation; pass ``start`` when the log should start the chain. Exported
checkpoints at or before the trusted start are not checked.

**Speed.** Lines are checked by position, without JSON parsing (only
checkpoint, alert and problem lines take the exact, slower path): per line one
SHA-256 and two prefix/suffix comparisons. ``verify_files`` reads 4 MiB
binary chunks. In one process this is about 250,000-300,000 records/s on a
2-core x86_64 box (a quarter of hashing every line alone: the rest is Python
per line). For logs of ``PARALLEL_MIN_BYTES`` and more, ``verify_files``
checks blocks of whole lines in worker processes (one per core; each reads
its block itself, and this process reads only the few bytes around each cut)
and stitches them here: a block that verified on its own
and whose first line links to the chain so far is taken whole; any other
block is checked again here line by line, so the report (first bad index,
problem, counts) is exactly the sequential one. ``docs/benchmarks.md`` has
the figures.

**Encrypted devices.** ``decode`` maps each stored line (given without its
``\\n``) to the record line before any check (``RecordCipher.open``); it
raises ``DecryptionError`` or ``ValueError`` (``LineError`` is one) for a
line it cannot decode, reported as ``malformed line``. Without ``decode``, a
sealed line (``"kind":"sealed"``, see ``crypt.py``) is checked for its
place only: its ``seq``, ``prev`` and ``hash`` (copied from the plaintext)
must chain, but its content is not hashed; ``VerifyReport.sealed`` counts
such lines, and a modified ciphertext goes unnoticed until it is verified
with the key. With ``decode``, rule 8 does not apply (``readback.line_decoder``
passes plain lines as they are): each sealed line's ``prev``/``seq``/``hash``
are the associated data of its encryption, so the link from the record before
it, plain or not, is checked.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medsecrets.audit.checkpoint import CHECKPOINT_EVERY, verify_checkpoint
from medsecrets.audit.device import ChainHead
from medsecrets.audit.readback import MAX_LINE_BYTES
from medsecrets.audit.record import GENESIS, SEALED_DATA, LineError, parse_line
from medsecrets.errors import DecryptionError
from medsecrets.fdio import open_regular
from medsecrets.workers import (
    PARALLEL_MIN_BYTES,
    line_end,
    process_pool,
    read_range,
    worker_count,
)

__all__ = [
    "PARALLEL_MIN_BYTES",
    "UNSIGNED_TAIL",
    "Decoder",
    "VerifyReport",
    "verify",
    "verify_files",
]

Decoder = Callable[[bytes], bytes]
"""Maps a stored line to its record line (decryption of an encrypted device)."""

_HEAD: Final = b'{"prev":"'
_SEQ_MARK: Final = b'","seq":'
_HASH_MARK: Final = b',"hash":"'
_CHECKPOINT_KIND: Final = b'"kind":"checkpoint"'
_SEALED_KIND: Final = b'"kind":"sealed"'
_TAIL: Final = 75  # len(',"hash":"') + 64 + len('"}')
_MIN_LEN: Final = 84 + _TAIL
_CHUNK: Final = 1 << 22
_GENESIS: Final = GENESIS.encode()
_NEVER: Final = b"\0%b%d"
"""A fast-path head no line matches (every line then takes ``_slow``)."""
_HEX64: Final = re.compile(rb"[0-9a-f]{64}")
"""A ``prev`` or ``hash`` as the writer writes it (a SHA-256 in lowercase hex)."""

PROBLEM_MALFORMED: Final = "malformed line"
PROBLEM_LONG: Final = f"malformed line (longer than {MAX_LINE_BYTES} bytes)"
PROBLEM_HASH: Final = "hash mismatch"
PROBLEM_CHAIN: Final = "chain broken (prev does not match)"
PROBLEM_GAP: Final = "sequence gap"
PROBLEM_DUPLICATE: Final = "duplicate record"
PROBLEM_BACKWARDS: Final = "sequence goes backwards (reordered or replayed record)"
PROBLEM_INSERTED: Final = "inserted record"
PROBLEM_SIGNATURE: Final = "bad checkpoint signature"
PROBLEM_COVERS: Final = "checkpoint does not cover the record before it"
PROBLEM_DIVERGES: Final = "log diverges from exported checkpoint"
PROBLEM_MIXED: Final = (
    "mixed encryption (an encrypted record right after a plain record written unsealed: "
    "a record replaced by a line no key opens, or a device switched to encryption)"
)
PROBLEM_DOWNGRADE: Final = (
    "mixed encryption (a plain record after encrypted ones holding what only an unsealed "
    "store writes, HMACs, a principal or a checkpoint: a downgraded or inserted record)"
)
PROBLEM_ENCRYPTED: Final = "encrypted record: its checkpoint signatures need the key"

UNSIGNED_TAIL: Final = CHECKPOINT_EVERY + 1
"""Default ``unsigned_tail``: the server's default checkpoint period, and one more (a
request's record and its response's are never split by a checkpoint)."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify``/``verify_files``.

    ``records`` counts the lines before the first bad one (all of them when
    ``ok``); ``last_seq``/``last_hash`` are those of the last record whose
    chain verified (when ``ok``, the chain head to continue from: ``head``).
    ``checkpoints_verified`` counts checkpoint records in the log whose
    signature was checked with the public key; ``sealed`` the encrypted
    records whose content could not be checked (no ``decode``: see module
    docstring); ``plain_stretches`` the plain stretches after encrypted records (the
    sealed spells of later starts, rule 8) and ``plain_stretch_records`` the records in
    them, whose link to the encrypted records after them needs the key.
    When not ``ok``: ``first_bad_index`` is the 0-based line index of the
    first bad line (in ``file`` for ``verify_files``; for a truncated tail,
    the index where the missing record should be; ``None`` for a forged
    exported checkpoint, which is no line of the log), ``first_bad_seq`` the
    sequence number where the chain fails (``None`` if unknown), ``problem``
    a short human reason (no record content).
    """

    ok: bool
    records: int
    checkpoints_verified: int
    first_bad_index: int | None
    first_bad_seq: int | None
    problem: str | None
    last_seq: int
    last_hash: str
    file: Path | None = None
    sealed: int = 0
    plain_stretches: int = 0
    plain_stretch_records: int = 0

    @property
    def head(self) -> ChainHead:
        """The last verified record as a ``ChainHead``."""
        return ChainHead(self.last_seq, self.last_hash)


@dataclass(frozen=True, slots=True)
class _Failure:
    index: int | None
    seq: int | None
    problem: str


class _Chain:
    """The verification state machine: ``feed`` lines, then ``finish``.

    Invariant: the first ``index`` lines fed verified, and in a verified
    chain seq and line index advance together (``last_seq`` is line
    ``index - 1``), so any seq in range has a known line index.
    """

    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey | None,
        checkpoints: Sequence[Mapping[str, object]],
        start: ChainHead | None,
        decode: Decoder | None,
        unsigned_tail: int = UNSIGNED_TAIL,
    ) -> None:
        self.public_key = public_key
        self.decode = decode
        self.unsigned_tail = unsigned_tail if public_key is not None else 0
        self.sealed_seen = False
        """Without ``decode``: whether a sealed line has verified (plain lines must be
        sealed-spell records from then on: rule 8)."""
        self.last_line: bytes | None = None
        """The last line that verified (as stored), ``None`` at the start of the chain."""
        self.plain_stretches = 0
        self.plain_stretch_records = 0
        self.index = 0
        self.signed = 0
        self.sealed = 0
        self.started = start is not None
        self.seq_known = start is not None
        self.first_seq = start.seq + 1 if start is not None else 1
        self.last_seq = start.seq if start is not None else 0
        self.last_hash = (start.hash if start is not None else GENESIS).encode()
        self.before_last: bytes | None = None
        self.last_signed = self.last_seq
        """The seq of the last signed checkpoint (or of the record the chain starts after)."""
        self.failure: _Failure | None = None
        self.exported: dict[int, bytes] = {}
        self.seen: dict[int, bytes] = {}
        self._load_exported(checkpoints)

    def _load_exported(self, checkpoints: Sequence[Mapping[str, object]]) -> None:
        for checkpoint in checkpoints:
            seq, digest = checkpoint.get("seq"), checkpoint.get("hash")
            if (
                type(seq) is not int  # a bool is no seq
                or seq < 1  # no record has: the check would be skipped
                or not isinstance(digest, str)
                or checkpoint.get("kind") != "checkpoint"
            ):
                shown = seq if type(seq) is int else type(seq).__name__  # bounded: one line
                raise LineError(f"an exported checkpoint is not a checkpoint record (seq {shown})")
            if self.public_key is not None and not verify_checkpoint(checkpoint, self.public_key):
                self.failure = _Failure(None, seq, f"{PROBLEM_SIGNATURE} (exported, seq {seq})")
                return
            if self.exported.setdefault(seq, digest.encode()) != digest.encode():
                self.failure = _Failure(None, seq, f"exported checkpoints disagree at seq {seq}")
                return

    def _start_at(self, line: bytes) -> None:
        """Trust the first line's ``prev``/``seq`` (``start=None``)."""
        self.started = True
        if self.decode is not None:
            try:
                line = _decoded(line, self.decode)
            except (ValueError, DecryptionError):
                return  # _run reports it as malformed
        if (
            not line.startswith(_HEAD)
            or line[73:81] != _SEQ_MARK
            or not _HEX64.fullmatch(line, 9, 73)  # never trusted: _slow finds it malformed
        ):
            return
        comma = line.find(b",", 81, 104)
        digits = line[81:comma]
        if comma < 0 or not digits.isdigit() or int(digits) < 1:
            return
        seq = int(digits)
        self.seq_known = True
        self.first_seq = seq
        self.last_seq = seq - 1
        self.last_signed = seq - 1
        self.last_hash = _GENESIS if seq == 1 else line[9:73]

    def feed(self, lines: Iterable[bytes]) -> bool:
        """Check ``lines`` (with or without ``\\n``); ``False`` once a bad one is found."""
        if self.failure is not None:
            return False
        iterator = iter(lines)
        first = next(iterator, None)
        if first is None:
            return True
        if not self.started:
            self._start_at(first)
        self._run(first, iterator)
        return self.failure is None

    def _run(self, first: bytes, rest: Iterator[bytes]) -> None:
        """The hot loop: one SHA-256, one ``endswith``, one ``startswith`` per line.

        The fast path takes request/response lines of the layout the first
        line has (with or without ``\\n``); anything else (checkpoints,
        alerts, other line endings, every problem) goes to ``_slow``, which
        decides exactly.
        """
        sha256 = hashlib.sha256
        decode = self.decode
        if _sample(first, decode).endswith(b"\n"):
            cut, tail = -_TAIL - 1, b',"hash":"%b"}\n'
        else:
            cut, tail = -_TAIL, b',"hash":"%b"}'
        # After a sealed line every line takes _slow (a plain one is checked for rule 8).
        head = _NEVER if self.sealed_seen else b'{"prev":"%b","seq":%d,"kind":"r'
        previous = self.last_line
        index = self.index
        last_seq = self.last_seq
        last_hash = self.last_hash
        before_last = self.before_last
        failure: _Failure | None = None
        longest = MAX_LINE_BYTES
        for line in itertools.chain((first,), rest):
            if len(line) >= longest and _too_long(line):
                failure = _Failure(index, last_seq + 1, PROBLEM_LONG)
                break
            if decode is not None:
                try:
                    line = _decoded(line, decode)  # noqa: PLW2901 - the record replaces the stored line
                except (ValueError, DecryptionError):
                    failure = _Failure(index, last_seq + 1, PROBLEM_MALFORMED)
                    break
            digest = sha256(line[:cut] + b"}").hexdigest().encode()
            if not (
                line.endswith(tail % digest) and line.startswith(head % (last_hash, last_seq + 1))
            ):
                found = self._slow(line, index, last_seq, last_hash, before_last, previous=previous)
                if isinstance(found, _Failure):
                    failure = found
                    break
                digest = found
                if self.sealed_seen:
                    head = _NEVER
            previous = line
            before_last = last_hash
            last_hash = digest
            last_seq += 1
            index += 1
        if failure is not None and failure.problem == PROBLEM_INSERTED:
            # The line before was the insertion: it is not a verified record.
            index -= 1
            last_seq -= 1
            last_hash = before_last if before_last is not None else last_hash
        self.index = index
        self.last_seq = last_seq
        self.last_hash = last_hash
        self.before_last = before_last
        self.last_line = previous
        self.failure = failure

    def _slow(
        self,
        line: bytes,
        index: int,
        last_seq: int,
        last_hash: bytes,
        before_last: bytes | None,
        *,
        previous: bytes | None,
    ) -> bytes | _Failure:
        """Check one line exactly: its hash (to continue the chain) or the failure
        (``previous``: the line before it as stored, ``None`` at the start)."""
        n = len(line) - 1 if line.endswith(b"\n") else len(line)
        comma = line.find(b",", 81, 104)
        if (
            n < _MIN_LEN
            or comma < 0
            or not line.startswith(_HEAD)
            or line[73:81] != _SEQ_MARK
            or line[n - _TAIL : n - 66] != _HASH_MARK
            or line[n - 2 : n] != b'"}'
            or not line[81:comma].isdigit()
            or not _HEX64.fullmatch(line, 9, 73)
            or not _HEX64.fullmatch(line, n - 66, n - 2)
        ):
            return _Failure(index, last_seq + 1, PROBLEM_MALFORMED)
        digest = line[n - 66 : n - 2]
        sealed = line.startswith(_SEALED_KIND, comma + 1)
        if self.decode is None:  # rule 8
            if sealed:
                # Once a sealed line verified, every plain one after it is a sealed spell's.
                if not self.sealed_seen and previous is not None and not _sealed_spell(previous):
                    return _Failure(index, last_seq + 1, PROBLEM_MIXED)
                if self.public_key is not None:
                    return _Failure(index, last_seq + 1, PROBLEM_ENCRYPTED)
            elif self.sealed_seen and not _sealed_spell(line):
                return _Failure(index, last_seq + 1, PROBLEM_DOWNGRADE)
        if not sealed and hashlib.sha256(line[: n - _TAIL] + b"}").hexdigest().encode() != digest:
            return _Failure(index, last_seq + 1, PROBLEM_HASH)
        seq = int(line[81:comma])
        prev = line[9:73]
        if seq != last_seq + 1 or prev != last_hash:
            return _diagnose(
                index,
                seq=seq,
                prev=prev,
                digest=digest,
                last_seq=last_seq,
                last_hash=last_hash,
                before_last=before_last,
            )
        if line.startswith(_CHECKPOINT_KIND, comma + 1):
            problem = self._checkpoint(line[:n], seq, prev)
            if problem is not None:
                return _Failure(index, seq, problem)
        if sealed:
            self.sealed += 1
            self.sealed_seen = True
        elif self.sealed_seen:
            self.plain_stretch_records += 1
            if previous is not None and _is_sealed(previous):
                self.plain_stretches += 1
        if seq in self.exported:
            self.seen[seq] = digest
        return digest

    def _checkpoint(self, line: bytes, seq: int, prev: bytes) -> str | None:
        """The problem with the checkpoint record ``line`` at ``seq``, or ``None``."""
        try:
            record = parse_line(line)  # as strictly as the writer writes
        except LineError:
            return PROBLEM_MALFORMED
        covers = record.get("covers")
        if (
            type(covers) is not int  # not a bool or a float equal to it
            or covers != seq - 1
            or record.get("covers_hash") != prev.decode("ascii")
        ):
            return PROBLEM_COVERS
        if self.public_key is not None:
            if not verify_checkpoint(record, self.public_key):
                return PROBLEM_SIGNATURE
            self.signed += 1
            self.last_signed = seq
        return None

    def finish(self) -> _Failure | None:
        """The first failure, counting exported checkpoints the log does not hold.

        An exported checkpoint inside the verified range must be a record the
        log holds (else the log diverges there, which comes before any later
        failure); one past its end means a truncated tail. Then the unsigned
        tail of the verified records (rule 7), if it comes before the failure.
        """
        self._check_exported()
        limit = self.unsigned_tail
        over = self.last_signed + limit + 1
        if limit and over <= self.last_seq:
            failure = self.failure
            if failure is None or failure.seq is None or over < failure.seq:
                self.failure = _Failure(
                    self.index - 1 - (self.last_seq - over),
                    over,
                    f"unsigned tail: no signed checkpoint after seq {self.last_signed} "
                    f"(more than {limit} records: rewritten, checkpoints removed, or written "
                    "while the server was sealed)",
                )
        return self.failure

    def _check_exported(self) -> None:
        """``finish``'s check of the exported checkpoints."""
        for seq in sorted(self.exported):
            if seq < self.first_seq:
                continue  # before the (trusted) start: not checkable in this log
            if seq <= self.last_seq:
                if self.seen.get(seq) != self.exported[seq]:
                    index = self.index - 1 - (self.last_seq - seq)
                    self.failure = _Failure(index, seq, PROBLEM_DIVERGES)
                    break
            elif self.failure is None:
                self.failure = _Failure(
                    self.index,
                    self.last_seq + 1,
                    f"truncated: log ends at seq {self.last_seq}, "
                    f"exported checkpoint covers seq {max(self.exported)}",
                )
                break

    def report(self, failure: _Failure | None, file: Path | None = None) -> VerifyReport:
        """The ``VerifyReport`` for the state reached."""
        records = self.index
        if failure is not None and failure.index is not None:
            records = min(records, failure.index)
        return VerifyReport(
            ok=failure is None,
            records=records,
            checkpoints_verified=self.signed,
            first_bad_index=failure.index if failure is not None else None,
            first_bad_seq=failure.seq if failure is not None and self.seq_known else None,
            problem=failure.problem if failure is not None else None,
            last_seq=self.last_seq,
            last_hash=self.last_hash.decode("ascii"),
            file=file,
            sealed=self.sealed,
            plain_stretches=self.plain_stretches,
            plain_stretch_records=self.plain_stretch_records,
        )


def _too_long(line: bytes) -> bool:
    """Whether the stored ``line`` (with or without its ``\\n``) is longer, ``\\n`` included,
    than ``MAX_LINE_BYTES``: no writer makes such a line, and no reader reads it
    (``readback``). A line cut short there (``_feed_file``, ``_cuts``) is one."""
    return len(line) + (not line.endswith(b"\n")) > MAX_LINE_BYTES


def _sealed_spell(line: bytes) -> bool:
    """Whether the plain record ``line`` is one a sealed store writes (rule 8): a request
    or response rendered without the HMAC key (``accessor`` null, ``data`` null or
    ``SEALED_DATA``) and naming no ``principal`` (a sealed store authenticates nobody: its
    tokens are behind the barrier), or an alert (alerts hold no HMAC); never a checkpoint
    (its signing key is behind the barrier too)."""
    try:
        record = parse_line(line[:-1] if line.endswith(b"\n") else line)
    except LineError:
        return False
    kind = record.get("kind")
    if kind == "alert":
        return True
    data = record.get("data")
    return (
        kind in ("request", "response")
        and record.get("accessor") is None
        and record.get("principal") is None
        and (data is None or data == SEALED_DATA)
    )


def _is_sealed(line: bytes) -> bool:
    """Whether a stored line is a sealed record (``kind`` right after ``seq``)."""
    comma = line.find(b",", 81, 104)
    return comma >= 0 and line.startswith(_SEALED_KIND, comma + 1)


def _sample(line: bytes, decode: Decoder | None) -> bytes:
    """``line`` as a record line (decoded), or ``b""`` when it cannot be decoded."""
    if decode is None:
        return line
    try:
        return _decoded(line, decode)
    except (ValueError, DecryptionError):
        return b""


def _decoded(line: bytes, decode: Decoder) -> bytes:
    """``decode`` of the stored ``line`` without its ``\\n``."""
    return decode(line[:-1] if line.endswith(b"\n") else line)


def _diagnose(
    index: int,
    *,
    seq: int,
    prev: bytes,
    digest: bytes,
    last_seq: int,
    last_hash: bytes,
    before_last: bytes | None,
) -> _Failure:
    """Name what is wrong with a well-formed line that does not follow the chain."""
    if seq == last_seq and digest == last_hash:
        return _Failure(index, seq, PROBLEM_DUPLICATE)
    if seq == last_seq and prev == before_last:
        return _Failure(index - 1, seq, PROBLEM_INSERTED)
    if seq > last_seq + 1:
        return _Failure(index, last_seq + 1, PROBLEM_GAP)
    if seq <= last_seq:
        return _Failure(index, last_seq + 1, PROBLEM_BACKWARDS)
    return _Failure(index, seq, PROBLEM_CHAIN)


def verify(
    lines: Iterable[bytes],
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoints: Sequence[Mapping[str, object]] = (),
    start: ChainHead | None = None,
    decode: Decoder | None = None,
    unsigned_tail: int = UNSIGNED_TAIL,
) -> VerifyReport:
    """Verify one chain given as record lines, in order (see module docstring).

    Never raises for a bad line: the report says what and where. Raises
    ``LineError`` only for an exported checkpoint that is not a checkpoint
    record (no ``kind`` "checkpoint", ``hash`` or integer ``seq`` of 1 or more: one
    below would be skipped as before the start, the check asked for not made).
    """
    chain = _Chain(
        public_key=public_key,
        checkpoints=checkpoints,
        start=start,
        decode=decode,
        unsigned_tail=unsigned_tail,
    )
    chain.feed(lines)
    return chain.report(chain.finish())


def verify_files(
    paths: Sequence[Path],
    *,
    public_key: Ed25519PublicKey | None = None,
    checkpoints: Sequence[Mapping[str, object]] = (),
    start: ChainHead | None = None,
    decode: Decoder | None = None,
    workers: int | None = None,
    unsigned_tail: int = UNSIGNED_TAIL,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Verify rotated files, oldest first, as one chain (see module docstring).

    The report's ``file`` and ``first_bad_index`` name the file and the
    0-based line in it. ``workers`` is the number of hashing processes:
    ``None`` picks one per available core for logs of ``PARALLEL_MIN_BYTES``
    or more (else none), ``0`` or ``1`` checks in this process; the report is
    the same either way. ``progress(n)`` is called with the bytes just checked,
    chunk by chunk (block by block with workers, as their blocks are taken): the
    calls add up to the files' sizes when the chain verifies. Raises ``OSError``
    for a file that cannot be read.
    """
    chain = _Chain(
        public_key=public_key,
        checkpoints=checkpoints,
        start=start,
        decode=decode,
        unsigned_tail=unsigned_tail,
    )
    starts: list[int] = []
    with _pool(paths, workers, decode) as (pool, window):
        for path in paths:
            starts.append(chain.index)
            if pool is None:
                fed = _feed_file(chain, path, progress or _ignore)
            else:
                fed = _feed_blocks(chain, path, pool, window, progress or _ignore)
            if not fed:
                break
    failure = chain.finish()
    if failure is None or failure.index is None or not paths:
        return chain.report(failure)
    which = max(bisect.bisect_right(starts, failure.index) - 1, 0)
    local = _Failure(failure.index - starts[which], failure.seq, failure.problem)
    return chain.report(local, paths[which])


def _ignore(done: int) -> None:
    """No progress report."""


def _feed_file(chain: _Chain, path: Path, progress: Callable[[int], None]) -> bool:
    """Feed the lines of ``path`` (without ``\\n``), a large chunk at a time.

    A last line without ``\\n`` (a torn write) is fed too, so it is checked
    (and found malformed) rather than ignored. A line that has grown to
    ``MAX_LINE_BYTES`` without its ``\\n`` is fed as far as it was read (and found too
    long), so at most about ``_CHUNK`` + ``MAX_LINE_BYTES`` bytes are held, whatever the
    file holds. ``False`` once a line is bad.
    """
    with open_regular(path, buffered=False) as handle:
        rest = b""
        while chunk := handle.read(_CHUNK):
            lines = (rest + chunk if rest else chunk).split(b"\n")
            rest = lines.pop()
            if not chain.feed(lines):
                return False
            if len(rest) >= MAX_LINE_BYTES:
                return chain.feed([rest])  # False: too long, whatever follows
            progress(len(chunk))
        return chain.feed([rest]) if rest else True


# -- parallel verification ----------------------------------------------------------------------
#
# A file is cut into blocks of whole lines. A worker process checks a block on
# its own, trusting the ``prev``/``seq`` of its first line (as ``start=None``
# does) with the very ``_Chain`` code, and returns a ``_Block`` summary. This
# process then stitches: a block that verified on its own and whose first line
# follows the chain so far (its trusted ``prev``/``seq`` are the chain head) is
# merged as if its lines had been fed here; any other block is fed here, line by
# line, which finds the first bad record exactly as the sequential path does.


@dataclass(frozen=True, slots=True)
class _Block:
    """What a worker found in one block of lines (see the comment above)."""

    lines: int
    ok: bool
    """Every line verified, given the first line's trusted ``prev``/``seq``."""
    first_seq: int
    first_prev: bytes
    last_seq: int
    last_hash: bytes
    before_last: bytes | None
    sealed: int
    signed: int
    last_signed: int
    """The seq of the block's last signed checkpoint (when ``signed``)."""
    first_sealed: bool
    sealed_seen: bool
    last_line: bytes | None
    plain_stretches: int
    plain_stretch_records: int
    seen: dict[int, bytes]


def _check_block(
    where: tuple[str, int, int, tuple[int, int]],
    public_key: bytes | None,
    exported: frozenset[int],
) -> _Block | None:
    """Check a block of whole lines on its own (in a worker).

    ``where`` is ``(file name, offset, length, (device, inode))``: the worker
    reads the block itself (cheaper than sending it). ``None`` when the file
    at that name is no longer the one being verified, or is shorter.
    """
    block = read_range(*where)
    if block is None:
        return None
    lines = _lines(block)
    key = None if public_key is None else Ed25519PublicKey.from_public_bytes(public_key)
    chain = _Chain(public_key=key, checkpoints=(), start=None, decode=None)
    chain.exported = dict.fromkeys(exported, b"")
    chain._start_at(lines[0])
    first_seq, first_prev = chain.last_seq + 1, chain.last_hash
    ok = chain.seq_known and chain.feed(lines)
    return _Block(
        lines=len(lines),
        ok=ok,
        first_seq=first_seq,
        first_prev=first_prev,
        last_seq=chain.last_seq,
        last_hash=chain.last_hash,
        before_last=chain.before_last,
        sealed=chain.sealed,
        signed=chain.signed,
        last_signed=chain.last_signed,
        first_sealed=_is_sealed(lines[0]),
        sealed_seen=chain.sealed_seen,
        last_line=chain.last_line,
        plain_stretches=chain.plain_stretches,
        plain_stretch_records=chain.plain_stretch_records,
        seen=chain.seen,
    )


def _merge(chain: _Chain, found: _Block | None) -> bool:
    """Advance ``chain`` over a block checked by a worker; ``False`` if it does not follow.

    A worker checks rule 8 within its block only, so a block whose first line rule 8
    judges by the lines before it (a sealed line after a plain one; a plain line after a
    sealed one) is checked here instead.
    """
    if (
        found is None
        or not found.ok
        or found.first_seq != chain.last_seq + 1
        or found.first_prev != chain.last_hash
        or (found.first_sealed and chain.last_line is not None and not _is_sealed(chain.last_line))
        or (not found.first_sealed and chain.sealed_seen)
    ):
        return False
    chain.sealed_seen = chain.sealed_seen or found.sealed_seen
    chain.last_line = found.last_line
    chain.plain_stretches += found.plain_stretches
    chain.plain_stretch_records += found.plain_stretch_records
    if found.signed:
        chain.last_signed = found.last_signed
    chain.index += found.lines
    chain.last_seq = found.last_seq
    chain.last_hash = found.last_hash
    chain.before_last = found.before_last
    chain.sealed += found.sealed
    chain.signed += found.signed
    chain.seen.update(found.seen)
    return True


def _lines(block: bytes) -> list[bytes]:
    """The lines of a block (without ``\\n``; the last one may have had none)."""
    lines = block.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


def _cuts(descriptor: int, size: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of blocks of whole lines of the open file, about ``_CHUNK`` bytes
    each (a block ends at the first ``\\n`` from there; the last one may lack it).

    A block is cut short ``MAX_LINE_BYTES`` past where its ``\\n`` was looked for: the
    line there is too long (``_too_long``) and the chain fails there, so no block is
    longer than ``_CHUNK`` + ``MAX_LINE_BYTES`` (a file without a line break is not read
    whole). Only a few bytes at each cut are read here: the workers read the blocks.
    """
    start = 0
    while start < size:
        at = min(start + _CHUNK, size) - 1
        end = line_end(descriptor, at, min(at + MAX_LINE_BYTES, size))
        yield start, end - start
        start = end


def _feed_blocks(
    chain: _Chain,
    path: Path,
    pool: concurrent.futures.Executor,
    window: int,
    progress: Callable[[int], None],
) -> bool:
    """``_feed_file`` with the blocks of ``path`` checked in ``pool`` (same outcome).

    The file is verified as long as it was when opened. This process opens it
    once and reads only around the cuts (and any block a worker did not check,
    from the file it opened, never from the name again). At most ``window``
    blocks are in flight (submitted, and not yet merged).
    """
    if chain.failure is not None:
        return False
    key = None if chain.public_key is None else chain.public_key.public_bytes_raw()
    exported = frozenset(chain.exported)
    name = os.fspath(path)
    pending: collections.deque[tuple[int, int, concurrent.futures.Future[_Block | None]]] = (
        collections.deque()
    )
    with open_regular(path, buffered=False) as handle:
        descriptor = handle.fileno()
        status = os.fstat(descriptor)
        identity = (status.st_dev, status.st_ino)
        try:
            for offset, length in _cuts(descriptor, status.st_size):
                if not chain.started:
                    chain._start_at(
                        _lines(os.pread(descriptor, line_end(descriptor, 0, length), 0))[0]
                    )
                where = (name, offset, length, identity)
                pending.append((offset, length, pool.submit(_check_block, where, key, exported)))
                while len(pending) >= window:
                    if not _take(chain, descriptor, pending.popleft(), progress):
                        return False
            while pending:
                if not _take(chain, descriptor, pending.popleft(), progress):
                    return False
        finally:
            for *_, future in pending:
                future.cancel()
    return True


def _take(
    chain: _Chain,
    descriptor: int,
    item: tuple[int, int, concurrent.futures.Future[_Block | None]],
    progress: Callable[[int], None],
) -> bool:
    """Advance ``chain`` over a block ``(offset, length, its worker's answer)``: merged as
    its worker found it, else checked here, line by line, from the open file (``False``
    once a line is bad)."""
    offset, length, future = item
    if not _merge(chain, _result(future)) and not chain.feed(
        _lines(os.pread(descriptor, length, offset))
    ):
        return False
    progress(length)
    return True


def _result(future: concurrent.futures.Future[_Block | None]) -> _Block | None:
    """A worker's answer; ``None`` (check the block here) if the worker failed in any way."""
    try:
        return future.result()
    except Exception:  # a dead pool or an unreadable file: the exact path decides
        return None


@contextlib.contextmanager
def _pool(
    paths: Sequence[Path], workers: int | None, decode: Decoder | None
) -> Iterator[tuple[concurrent.futures.Executor | None, int]]:
    """The worker pool for ``verify_files`` (``None``: verify here) and its block window."""
    workers = worker_count(workers, paths)
    if workers < 2 or decode is not None:  # a decoder holds a key: it stays in this process
        yield None, 0
        return
    with process_pool(workers) as pool:
        yield pool, 2 * workers
