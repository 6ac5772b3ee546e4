"""Reading a device's records back for queries: every chain it holds, merged by time.

One device can hold several chains, and a query (``search``, ``who-read``: the
blast-radius answer) must see them all:

- a file device configured at ``<dir>/<stem><suffix>`` holds the chain of a
  one-process server (``<stem><suffix>`` and its rotated files
  ``<stem>-<stamp>-<seq>.jsonl``) and, with ``workers > 1``, one chain per
  worker process (``<stem>-<pid><suffix>``, ``<stem>-<pid>-<stamp>-<seq>.jsonl``),
  those of earlier runs included: ``file_chains``;
- a database device holds one chain per node id (``audit/<node>/<name>/``; the
  node id defaults to the host name, which a container changes at each start):
  ``database_nodes``.

``merged(chains)`` interleaves the records of the chains by their ``time``
(each chain is in time order already, so the merge streams). ``merged_in_turn``
does the same but starts a chain only when the merge reaches the time of its
first record (``chain_start``) and lets it go at its end, so the files open at
once are those of the chains whose records overlap in time (a worker's chains of
earlier runs are read one after another, not all opened at once).
``given_chains`` groups files given by name (``medsecrets audit search --file
'audit*.jsonl'``) into their chains the way ``file_chains`` finds them. Files are read a
line at a time, never whole; ``Unreadable`` counts the lines left out (over
``MAX_LINE_BYTES``, not decodable, not a JSON object as ``record.parse_line``
reads it, or an object without what every record has, ``record.is_record``: so
nothing the writer could not have made reaches an answer, as ``query.read_records``
refuses it offline): a
query answers with what it could read and says how much it could not. Files are
opened only if they are regular files (``fdio.open_regular``): a FIFO put in a file's
place would block the reader for ever and a device never end, so ``file_records`` counts
such a file as one unreadable line and reads on, and ``chain_start`` starts its chain at
once (its reader meets it in its place; ``query.read_records`` refuses it). A torn
last line (the device appending meanwhile) is not read. A rotated file whose name's stamp
(its rotation time, after its last record) is more than a second before
``since`` is skipped unread.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Final, TypeVar

from medsecrets.audit.crypt import RecordCipher, is_sealed
from medsecrets.audit.database import DatabaseAuditDevice
from medsecrets.audit.file import ROTATED_NAME
from medsecrets.audit.record import LineError, is_record, parse_line
from medsecrets.errors import DecryptionError
from medsecrets.fdio import NotRegularFileError, open_regular
from medsecrets.storage.base import StorageBackend

__all__ = [
    "MAX_LINE_BYTES",
    "Unreadable",
    "chain_start",
    "database_nodes",
    "database_records",
    "file_chains",
    "file_records",
    "given_chains",
    "line_decoder",
    "merged",
    "merged_in_turn",
    "numbered_lines",
]

MAX_LINE_BYTES: Final = 1 << 20
"""The longest line (bytes, ``\\n`` included) a query reads; longer ones are unreadable."""

_ROTATED_TAIL: Final = re.compile(rf"-{ROTATED_NAME}$")
_ROTATED_FILE: Final = re.compile(rf"(.+)-{ROTATED_NAME}")
_STAMP: Final = "%Y%m%dT%H%M%SZ"
_RECORD_HEAD: Final = b'{"prev":"'
"""How every record line starts (``record.render_line``; a sealed line too)."""

Decoder = Callable[[bytes], bytes]
R = TypeVar("R", bound=Mapping[str, object])


class Unreadable:
    """Counts the lines a query could not read (see module docstring)."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines = 0

    def __repr__(self) -> str:
        return f"Unreadable(lines={self.lines})"


def line_decoder(cipher: RecordCipher | None) -> Decoder | None:
    """Opens sealed lines with ``cipher``; other lines pass as they are (with ``\\n``): a
    device switched to encryption holds both. ``None`` without a cipher."""
    if cipher is None:
        return None

    def decode(line: bytes) -> bytes:
        return cipher.open(line) if is_sealed(line) else line + b"\n"

    return decode


def file_chains(base: Path) -> list[list[Path]]:
    """Every chain of the file device configured at ``base``: its files, oldest first
    (rotated files by their first record's seq, then the live file); the base chain first,
    then the workers' chains by pid."""
    stem, suffix = re.escape(base.stem), re.escape(base.suffix)
    live = re.compile(rf"{stem}(?:-(\d+))?{suffix}")
    rotated = re.compile(rf"{stem}(?:-(\d+))?-{ROTATED_NAME}")
    chains: dict[int, tuple[list[tuple[int, str, int, Path]], list[Path]]] = {}
    try:
        entries = list(base.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        found = live.fullmatch(name)
        if found is not None:
            chains.setdefault(int(found.group(1) or 0), ([], []))[1].append(entry)
            continue
        found = rotated.fullmatch(name)
        if found is not None:
            pid, stamp, seq, unique = found.groups()
            olds = chains.setdefault(int(pid or 0), ([], []))[0]
            olds.append((int(seq), stamp, int(unique or 0), entry))
    return [_chain_order(olds, lives) for _, (olds, lives) in sorted(chains.items())]


def _chain_order(olds: list[tuple[int, str, int, Path]], lives: list[Path]) -> list[Path]:
    """A chain's files in chain order: rotated ones by (first seq, stamp, unique suffix),
    then the live one(s)."""
    return [*(entry for *_, entry in sorted(olds)), *sorted(lives)]


def given_chains(paths: Iterable[Path]) -> list[list[Path]]:
    """``paths`` (given by a user: a pattern's matches, files copied off several hosts)
    grouped into chains, each in chain order (``file_chains``'s), the chains by directory
    and name; a path given twice is read once.

    A chain is a directory and a stem: a live file ``<stem><suffix>`` (a worker's is
    ``<stem>-<pid><suffix>``) and its rotated files ``<stem>-<stamp>-<seq>.jsonl``. A file
    named otherwise is a chain of its own (``Path.stem``)."""
    chains: dict[tuple[Path, str], tuple[list[tuple[int, str, int, Path]], list[Path]]] = {}
    for path in dict.fromkeys(paths):
        found = _ROTATED_FILE.fullmatch(path.name)
        stem = path.stem if found is None else found.group(1)
        olds, lives = chains.setdefault((path.parent, stem), ([], []))
        if found is None:
            lives.append(path)
        else:
            _, stamp, seq, unique = found.groups()
            olds.append((int(seq), stamp, int(unique or 0), path))
    return [_chain_order(olds, lives) for _, (olds, lives) in sorted(chains.items())]


def file_records(
    chain: Iterable[Path],
    *,
    decode: Decoder | None,
    unreadable: Unreadable,
    since: dt.datetime | None = None,
    needle: bytes | None = None,
) -> Iterator[dict[str, object]]:
    """The records of one chain's files, oldest first (see module docstring).

    ``needle``: record lines whose text does not contain it are skipped before
    they are parsed (a prefilter; the caller still checks what it needs); a
    line that does not even start as a record does is unreadable.
    """
    floor = None
    if since is not None:  # naive: UTC, as the queries take it
        aware = since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)
        with contextlib.suppress(OverflowError):  # near year 1: read every file
            floor = aware.astimezone(dt.UTC) - dt.timedelta(seconds=1)
    for path in chain:
        if floor is not None and _rotated_before(path, floor):
            continue
        try:
            handle = open_regular(path)
        except FileNotFoundError:  # rotated away or pruned since it was listed
            continue
        except NotRegularFileError:  # a FIFO or device in a file's place: never read
            unreadable.lines += 1
            continue
        with handle:
            while True:
                line = handle.readline(MAX_LINE_BYTES + 1)
                if not line.endswith(b"\n"):
                    if len(line) > MAX_LINE_BYTES:  # skip the rest of the long line
                        unreadable.lines += 1
                        _skip_line(handle)
                        continue
                    break  # the end, or a torn last line
                if decode is not None:
                    try:
                        line = decode(line.rstrip(b"\n"))
                    except (ValueError, DecryptionError):
                        unreadable.lines += 1
                        continue
                if needle is not None and needle not in line:
                    if not line.startswith(_RECORD_HEAD):  # not skipped: not a record at all
                        unreadable.lines += 1
                    continue
                record = _record(line, unreadable)
                if record is not None:
                    yield record


def numbered_lines(handle: BinaryIO, path: Path) -> Iterator[tuple[int, bytes]]:
    """Each line of ``handle`` (with its ``\\n``, if any) and its number from 1, for readers
    that skip nothing: a line over ``MAX_LINE_BYTES`` raises ``LineError`` naming ``path``
    and the line (read no further: at most ``MAX_LINE_BYTES`` + 1 bytes are held)."""
    limit = MAX_LINE_BYTES + 1
    number = 0
    while line := handle.readline(limit):
        number += 1
        if len(line) == limit and not line.endswith(b"\n"):
            raise LineError(f"{path}:{number}: a line over {MAX_LINE_BYTES} bytes")
        yield number, line


def _skip_line(handle: BinaryIO) -> None:
    """Read past the rest of an over-long line."""
    while True:
        chunk = handle.readline(MAX_LINE_BYTES)
        if not chunk or chunk.endswith(b"\n"):
            return


def _rotated_before(path: Path, floor: dt.datetime) -> bool:
    found = _ROTATED_TAIL.search(path.name)
    if found is None:
        return False
    try:
        stamp = dt.datetime.strptime(found.group(1), _STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return False
    return stamp < floor


def database_nodes(storage: StorageBackend, name: str) -> list[str]:
    """The node ids holding a chain of the database device ``name``, in key order.

    One ``list`` call per node id (it jumps past each node's keys), not a scan.
    """
    nodes: list[str] = []
    after = ""
    while True:
        page = storage.list("audit/", after=after, limit=1)
        if not page.keys:
            return nodes
        node = page.keys[0][len("audit/") :].partition("/")[0]
        prefix = f"audit/{node}/"
        # "0" follows "/": the least key after every key under the node's prefix
        after = f"audit/{node}0"
        if storage.list(f"{prefix}{name}/", limit=1).keys:
            nodes.append(node)


def database_records(
    storage: StorageBackend, name: str, node: str, *, unreadable: Unreadable
) -> Iterator[dict[str, object]]:
    """The records of the database device ``name``'s chain of ``node``, in chain order."""
    for line in DatabaseAuditDevice(name, storage, node=node).records():
        record = _record(line, unreadable)
        if record is not None:
            yield record


def _record(line: bytes, unreadable: Unreadable) -> dict[str, object] | None:
    """The record ``line`` holds; ``None`` (counted) for one the writer cannot have made."""
    try:
        record = parse_line(line)
    except LineError:
        record = None
    if record is None or not is_record(record):
        unreadable.lines += 1
        return None
    return record


def merged(chains: Iterable[Iterator[Mapping[str, object]]]) -> Iterator[Mapping[str, object]]:
    """The records of every chain, interleaved by ``time`` (see module docstring)."""
    return heapq.merge(*chains, key=_time_key)


def chain_start(chain: Iterable[Path], *, decode: Decoder | None = None) -> str:
    """The ``time`` of the first record of ``chain`` (its first file holding a line), for
    ``merged_in_turn``; ``""`` (start at once) when that line is no readable record, so the
    chain's reader meets it in its place, and when the file is not a regular file (never
    read: ``fdio.open_regular``). Opens one file at a time; a file gone (rotated away or
    pruned since it was listed) is passed over, as ``file_records`` does; any other
    ``OSError`` as raised."""
    for path in chain:
        try:
            with open_regular(path) as handle:
                line = handle.readline(MAX_LINE_BYTES + 1)
        except FileNotFoundError:
            continue
        except NotRegularFileError:
            return ""
        if not line:
            continue
        if not line.endswith(b"\n"):
            return ""
        try:
            record = parse_line(line if decode is None else decode(line.rstrip(b"\n")))
        except (ValueError, DecryptionError):  # LineError is a ValueError
            return ""
        return _time_key(record)
    return ""


def merged_in_turn(chains: Iterable[tuple[str, Callable[[], Iterator[R]]]]) -> Iterator[R]:
    """The records of every chain, interleaved by ``time`` as ``merged`` does (equal times
    in the order the chains are given), each chain given as ``(start, open)``: ``start``
    the time of its first record (``chain_start``), ``open`` making its reader, called
    only once the merge has reached ``start`` (the reader is dropped, and closed, at its
    end). So a merge holds one record, and the chain's open file, per chain whose records
    overlap in time, however many chains there are. Closing this iterator early closes
    the readers started."""
    pending = sorted(
        ((start, index, opener) for index, (start, opener) in enumerate(chains)),
        key=lambda chain: chain[:2],
        reverse=True,  # popped from the end
    )
    heap: list[tuple[str, int, R, Iterator[R]]] = []
    try:
        while True:
            while pending and (not heap or pending[-1][0] <= heap[0][0]):
                _, index, opener = pending.pop()
                records = opener()
                first = next(records, None)
                if first is not None:
                    heapq.heappush(heap, (_time_key(first), index, first, records))
            if not heap:
                return
            _, index, record, records = heap[0]
            yield record
            following = next(records, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (_time_key(following), index, following, records))
    finally:
        for *_, records in heap:
            close = getattr(records, "close", None)
            if close is not None:
                close()


def _time_key(record: Mapping[str, object]) -> str:
    time = record.get("time")
    return time if isinstance(time, str) else ""
