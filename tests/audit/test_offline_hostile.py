"""The offline audit-file commands against malformed and type-confused files.

``medsecrets audit verify FILE``, ``audit read FILE --key-file`` and the ``--file``
readers of ``search``, ``who-read`` and ``export`` are given files an operator copied
from somewhere: each must answer with a verification report naming the first bad
record (``verify``: exit 7) or one readable error line (exit 2), never a traceback, the
CLI's last-resort ``unexpected <Exception>`` line, a hang or memory that grows with the
file.

The inputs are built from real records (``tests.audit.chainmaker``: ``render_line``,
signed checkpoints): every member of a request/response record and of a checkpoint
record replaced by a value of each JSON type (or one the writer never writes: ``NaN``,
``1e400``, a lone surrogate), removed, or joined by an extra one, the line's hash
recomputed (an attacker's edit, so the check goes past the hash); then the bytes of
the file (NUL, CRLF, a BOM, invalid UTF-8, blank lines, lines of 10 MiB, a file of no
line break), exported checkpoints and signatures of every shape, malformed key files,
encrypted lines cut or garbled, and what is not a file at all (a gzip'd file and a
wrong key have their tests in ``tests/cli``). With worker processes (tiny blocks),
``verify_files`` must name the same first bad record as in one process.

The member matrix runs the CLI in this process (``main``; hundreds of cases); the rest
runs it as the operator does, in a process of its own (``tests.cli.conftest.run_cli``).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from medsecrets.audit import verify as verify_module
from medsecrets.audit.checkpoint import CheckpointSigner
from medsecrets.audit.crypt import RecordCipher
from medsecrets.audit.readback import MAX_LINE_BYTES
from medsecrets.audit.record import AuditEvent, LineError
from medsecrets.audit.verify import PROBLEM_LONG, VerifyReport, verify, verify_files
from medsecrets.cli.app import main
from tests.audit.chainmaker import ChainMaker, make_log, parse, write_log
from tests.cli.conftest import CliResult, run_cli
from tests.cli.test_audit_files import _peak_rss

SIGNER = CheckpointSigner.from_private_bytes(bytes(range(7, 39)))
KEY = bytes(range(32))
BASE = make_log(12, seed=5, signer=SIGNER, checkpoint_every=5)
"""12 records; the checkpoints (both exported) are lines 4 and 9 (seq 5 and 10)."""
RESPONSE, CHECKPOINT = 1, 4
"""The line indexes of a response record and of a checkpoint record in ``BASE``."""
VERIFY_FAILED = 7
USAGE = 2

# JSON texts of every type, and what the writer (orjson) never writes.
VALUES = {
    "null": b"null",
    "true": b"true",
    "false": b"false",
    "zero": b"0",
    "negative": b"-1",
    "float": b"1.5",
    "1e400": b"1e400",
    "NaN": b"NaN",
    "2**64": str(2**64).encode(),
    "huge int": b"1" + b"0" * 30,
    "string": b'"x"',
    "empty string": b'""',
    "digit string": b'"5"',
    "lone surrogate": b'"\\ud800"',
    "list": b"[]",
    "object": b"{}",
}


def rehash(text: bytes) -> bytes:
    """``text`` (a record line, its hash stale or not) with its hash recomputed."""
    body = text.rstrip(b"\n")
    body = body[: body.rindex(b',"hash":"')]
    return body + b',"hash":"' + hashlib.sha256(body + b"}").hexdigest().encode() + b'"}\n'


def with_member(line: bytes, member: str, value: bytes | None) -> bytes:
    """``line`` with ``member``'s value replaced by the JSON text ``value`` (removed when
    ``None``; added at the end when it has none), keys in place, the hash recomputed (or,
    for ``hash`` itself, replaced or removed)."""
    record = parse(line)
    del record["hash"]
    if member == "hash":
        body = line[: line.rindex(b',"hash":"')]
        return body + (b"}\n" if value is None else b',"hash":' + value + b"}\n")
    parts = [
        json.dumps(key).encode() + b":" + (value if key == member else _dumps(item))
        for key, item in record.items()
        if not (key == member and value is None)
    ]
    if member not in record and value is not None:
        parts.append(json.dumps(member).encode() + b":" + value)
    return rehash(b"{" + b",".join(parts) + b',"hash":"' + b"0" * 64 + b'"}')


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def run_here(capfd: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """The CLI run in this process (``main``), its output captured."""
    code = main(list(args))
    out, err = capfd.readouterr()
    return CliResult(tuple(args), int(code), out, err)


def clean(result: CliResult, *codes: int) -> CliResult:
    """Assert that ``result`` exited with one of ``codes`` as a handled outcome: no
    traceback, no last-resort ``unexpected`` error; a failure is one error line."""
    assert result.code in codes, f"{result.args}: exit {result.code}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr
    if result.code:
        result.error(result.code)
    return result


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoint public key (PEM), the encryption key file and the exported
    checkpoints of ``BASE``."""
    directory = tmp_path_factory.mktemp("keys")
    public = directory / "public.pem"
    public.write_bytes(SIGNER.public_key_pem())
    key = directory / "audit.key"
    key.write_text(KEY.hex(), encoding="ascii")
    exported = directory / "checkpoints.jsonl"
    exported.write_bytes(b"".join(BASE.lines[i] for i in (4, 9)))
    return {"public": public, "key": key, "checkpoints": exported}


@pytest.fixture
def tiny_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a line or two, so worker processes check a small file in many blocks."""
    monkeypatch.setattr(verify_module, "_CHUNK", 600)


def both(files: list[Path], **options: object) -> VerifyReport:
    """The report of ``verify_files`` in one process, asserted equal to the one of two
    worker processes."""
    alone = verify_files(files, workers=0, **options)  # type: ignore[arg-type]
    parallel = verify_files(files, workers=2, **options)  # type: ignore[arg-type]
    assert parallel == alone
    return alone


# -- every member of a record, of every type --------------------------------------------------
def _member_cases() -> Iterator[tuple[int, str, bytes | None, int]]:
    """``(line index, member, new value or None, index verify names)``."""
    for index in (RESPONSE, CHECKPOINT):
        record = parse(BASE.lines[index])
        for member in [*record, "extra"]:
            values: list[bytes | None] = [*VALUES.values(), None]
            if member == "extra":
                values = [b"1"]
            for value in values:
                if member in record and value == _dumps(record[member]):
                    continue  # the value it has
                yield index, member, value, _named_at(index, member, value)


UNWRITABLE = frozenset({VALUES["1e400"], VALUES["NaN"], VALUES["lone surrogate"]})
"""What the writer (orjson) never writes, nor reads."""


def _named_at(index: int, member: str, value: bytes | None) -> int:
    """The line ``verify --public-key`` names when ``member`` of line ``index`` is changed
    and the line's hash recomputed: the line itself when the change breaks its layout
    (``prev``, ``seq``, ``hash``) or its checkpoint (covers, signature, a value the writer
    cannot write; not its ``kind``: then it is no checkpoint), else the next line, whose
    ``prev`` no longer matches."""
    signed = ("covers", "covers_hash", "node", "device", "key_id", "signature")
    if member in ("prev", "seq", "hash"):
        return index
    if index == CHECKPOINT and (member in signed or (value in UNWRITABLE and member != "kind")):
        return index
    return index + 1


def _member_id(case: tuple[int, str, bytes | None, int]) -> str:
    index, member, value, _ = case
    kind = "response" if index == RESPONSE else "checkpoint"
    name = (
        "missing"
        if value is None
        else next((k for k, v in VALUES.items() if v == value), value.decode())
    )
    return f"{kind}.{member}={name}"


MEMBER_CASES = list(_member_cases())


@pytest.mark.parametrize("case", MEMBER_CASES, ids=[_member_id(c) for c in MEMBER_CASES])
def test_verify_names_a_record_with_a_member_of_another_type(
    case: tuple[int, str, bytes | None, int],
    tmp_path: Path,
    keys: dict[str, Path],
    capfd: pytest.CaptureFixture[str],
    tiny_blocks: None,
) -> None:
    index, member, value, named = case
    lines = list(BASE.lines)
    lines[index] = with_member(lines[index], member, value)
    log = write_log(tmp_path / "audit.jsonl", lines)

    report = both([log], public_key=SIGNER.public_key)
    assert (report.ok, report.first_bad_index) == (False, named), report
    if index == CHECKPOINT:
        named = index  # --checkpoints: it is no longer the checkpoint exported
    found = clean(
        run_here(capfd, "audit", "verify", str(log), "--public-key", str(keys["public"]),
                 "--checkpoints", str(keys["checkpoints"]), "-o", "json"),
        VERIFY_FAILED,
    )  # fmt: skip
    data = found.json()
    assert isinstance(data, dict) and data["first_bad_index"] == named
    assert f"line index {named} (line {named + 1})" in found.error(VERIFY_FAILED)


_READ_LAST = ("seq", "kind", "hash")
"""The members every record has (``record.is_record``): a reader refuses their line."""


@pytest.mark.parametrize("value", [*VALUES.values(), None], ids=[*VALUES, "missing"])
def test_the_readers_read_a_member_of_another_type_or_refuse_its_line(
    value: bytes | None, tmp_path: Path, keys: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    """One record a line, each with another member of a response or a checkpoint given
    ``value`` (those a reader refuses last): every reader reads the lines as they are,
    or refuses one by its file and number."""
    lines = [
        with_member(BASE.lines[index], member, value)
        for index in (RESPONSE, CHECKPOINT)
        for member in [*parse(BASE.lines[index]), "extra"]
        if member not in _READ_LAST
    ]
    lines += [with_member(BASE.lines[RESPONSE], member, value) for member in _READ_LAST]
    log = write_log(tmp_path / "audit.jsonl", lines)
    for args in (
        ("read", str(log), "--key-file", str(keys["key"]), "-o", "table"),
        ("read", str(log), "--key-file", str(keys["key"]), "-o", "json"),
        ("search", "--file", str(log), "--principal", "alice", "--since", "2020-01-01"),
        ("search", "--file", str(log), "-o", "table"),
        ("who-read", "medessence/production/database/main", "--file", str(log)),
        ("export", "--file", str(log), "--format", "cef"),
        ("export", "--file", str(log), "--format", "csv"),
    ):
        result = clean(run_here(capfd, "audit", *args), 0, USAGE)
        if result.code:
            assert re.search(rf"{re.escape(str(log))}:\d+: ", result.error(USAGE)), args


# -- the crashes this file found ----------------------------------------------------------------
def _sealed_with_hash(digest: bytes) -> bytes:
    """A sealed line (``RecordCipher.seal`` of ``BASE``'s first record) whose clear
    ``hash`` is ``digest`` (64 bytes): a key-less verifier cannot check it against the
    record."""
    sealed = RecordCipher(KEY).seal(BASE.lines[0])
    return sealed[:-67] + digest + b'"}\n'


def _non_ascii_prev(line: bytes) -> bytes:
    """``line`` with its ``prev`` made 64 bytes of non-ASCII UTF-8 and its hash recomputed."""
    return rehash(line[:9] + "é".encode() * 32 + line[73:])


def _big_record(size: int) -> list[bytes]:
    """A chain whose third record is a line of over ``size`` bytes, which the writer never
    writes (a user agent that long), every hash valid."""
    maker = ChainMaker(seed=3)
    maker.request_pair(principal="alice", status=200)
    maker.request_pair(principal="alice", status=200, user_agent="u" * size)
    return maker.lines


# Files ``verify`` must name a first bad record in (exit 7), no matter how: name ->
# (lines, line index, problem it starts with).
BAD_RECORDS: dict[str, tuple[list[bytes], int, str]] = {
    # UnicodeDecodeError: the trusted prev of a first line that fails went to the report
    "a first line whose prev is not ASCII": (
        [BASE.lines[3][:9] + b"\xff" * 64 + BASE.lines[3][73:]], 0, "malformed line",
    ),
    # UnicodeDecodeError: the checkpoint's covers_hash was compared with the trusted prev
    "a first checkpoint whose prev is not ASCII": (
        [_non_ascii_prev(BASE.lines[4]), *BASE.lines[5:]], 0, "malformed line",
    ),
    # UnicodeDecodeError: a sealed line's unchecked hash became the chain head
    "a sealed line whose hash is not ASCII": (
        [_sealed_with_hash("é".encode() * 32)], 0, "malformed line",
    ),
    # verified: a hash no record has
    "a sealed line whose hash is not hex": ([_sealed_with_hash(b"z" * 64)], 0, "malformed line"),
    # verified: the covers check took a float or a boolean equal to the seq before
    "a checkpoint covering seq 4.0": (
        [*BASE.lines[:4], rehash(BASE.lines[4].replace(b'"covers":4,', b'"covers":4.0,'))],
        4, "checkpoint does not cover",
    ),
    # verified: the checkpoint was parsed as leniently as the standard library's json does
    "a checkpoint with a lone surrogate": (
        [*BASE.lines[:4], rehash(BASE.lines[4].replace(b'"node-1"', b'"\\udfff"'))],
        4, "malformed line",
    ),
    # verified: a line longer than any reader reads (they refuse it: read, search, the server)
    "a record line of 2 MiB": (_big_record(2 << 20), 2, PROBLEM_LONG),
    "a line of 10 MiB without a line break": (
        [*BASE.lines[:3], b"x" * (10 << 20)], 3, PROBLEM_LONG,
    ),
    "a line of 10 MiB": ([*BASE.lines[:3], b"{" * (10 << 20) + b"\n"], 3, PROBLEM_LONG),
    # what was handled before (kept so)
    "a blank first line": ([b"\n", *BASE.lines], 0, "malformed line"),
    "only line breaks": ([b"\n"] * 5, 0, "malformed line"),
    "a NUL byte": (
        [*BASE.lines[:2], BASE.lines[2].replace(b"node-1", b"node\x001"), *BASE.lines[3:]],
        2, "hash mismatch",
    ),
    "CRLF line ends": ([line[:-1] + b"\r\n" for line in BASE.lines], 0, "malformed line"),
    "a UTF-8 BOM": ([b"\xef\xbb\xbf" + BASE.lines[0], *BASE.lines[1:]], 0, "malformed line"),
    "a duplicated seq": ([*BASE.lines[:3], BASE.lines[2], *BASE.lines[3:]], 3, "duplicate"),
    "a seq that goes back": ([*BASE.lines[:6], BASE.lines[2]], 6, "sequence goes backwards"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_RECORDS))
def test_verify_names_the_first_bad_record(name: str, tmp_path: Path, tiny_blocks: None) -> None:
    lines, index, problem = BAD_RECORDS[name]
    log = write_log(tmp_path / "audit.jsonl", lines)
    report = both([log])
    assert (report.ok, report.first_bad_index) == (False, index), report
    assert str(report.problem).startswith(problem), report
    line = clean(run_cli("audit", "verify", str(log)), VERIFY_FAILED).error(VERIFY_FAILED)
    assert f"line index {index} (line {index + 1})" in line and problem in line


@pytest.mark.parametrize(
    ("length", "problem"),
    [(MAX_LINE_BYTES - 1, "malformed line"), (MAX_LINE_BYTES, PROBLEM_LONG)],
    ids=["at the bound", "a byte over"],
)
def test_the_longest_line_is_the_readers_longest(
    length: int, problem: str, tmp_path: Path, tiny_blocks: None
) -> None:
    """``MAX_LINE_BYTES`` counts the line break, as the readers count it; a torn last line
    (no line break) as if it had one."""
    for end in (b"\n", b""):
        log = write_log(tmp_path / "audit.jsonl", [*BASE.lines[:3], b"x" * length + end])
        report = both([log])
        assert (report.first_bad_index, report.problem) == (3, problem), (end, report)


def test_a_file_without_line_breaks_is_verified_in_bounded_memory(tmp_path: Path) -> None:
    """A file of 96 MiB holding no line break used to be read whole (in one process, by
    joining 4 MiB chunks, the copies growing with the file; with workers, as one block,
    read by a worker and again here): now a line is given up once it is longer than
    any record, and the peak stays that of a small file, in one process (``--key-file``
    keeps the check in it) as with workers."""
    key = tmp_path / "audit.key"
    key.write_text(KEY.hex(), encoding="ascii")
    small = write_log(tmp_path / "small.jsonl", [b"x" * 100])
    big = tmp_path / "big.jsonl"
    with big.open("wb") as handle:
        handle.truncate(96 << 20)  # NUL bytes, no line break
    for extra in ((), ("--key-file", str(key))):
        peaks = []
        for log in (small, big):
            code, peak = _peak_rss(["audit", "verify", str(log), *extra], tmp_path / "out")
            assert code == VERIFY_FAILED
            peaks.append(peak)
        assert peaks[1] - peaks[0] < 32 * 1024, (extra, peaks)


def test_no_block_is_much_longer_than_a_chunk(tmp_path: Path) -> None:
    """The blocks workers check end at a line break or ``MAX_LINE_BYTES`` past where it was
    looked for: a file without line breaks is not one block of its whole size."""
    big = write_log(tmp_path / "big.jsonl", [*BASE.lines, b"x" * (12 << 20), *BASE.lines])
    with big.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        cuts = list(verify_module._cuts(handle.fileno(), size))
    assert max(length for _, length in cuts) <= verify_module._CHUNK + MAX_LINE_BYTES
    assert sum(length for _, length in cuts) == size
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(cuts))


# -- exported checkpoints, signatures, keys ---------------------------------------------------
def _exported_with(**members: object) -> bytes:
    record = parse(BASE.lines[4])
    record.update(members)
    return _dumps(record) + b"\n"


EXPORTED = [
        ("seq 0", _exported_with(seq=0), USAGE, "not a checkpoint record (seq 0)"),
        ("seq -3", _exported_with(seq=-3), USAGE, "not a checkpoint record (seq -3)"),
        ("seq a string", _exported_with(seq="5"), USAGE, "checkpoints.jsonl:1: not a checkpoint"),
        ("seq true", _exported_with(seq=True), USAGE, "checkpoints.jsonl:1: not a checkpoint"),
        # a value is named by its type only: the error stays one short line
        ("seq a long string", _exported_with(seq="x" * 100_000), USAGE,
         "checkpoints.jsonl:1: not a checkpoint"),
        ("covers more than the log", _exported_with(seq=99), VERIFY_FAILED,
         "truncated: log ends at seq 12"),
        ("another hash", _exported_with(hash="0" * 64), VERIFY_FAILED, "log diverges"),
        ("a hash not hex", _exported_with(hash="é" * 64), VERIFY_FAILED, "log diverges"),
        ("not JSON", b"{\n", USAGE, "checkpoints.jsonl:1: not a JSON record"),
        ("a list", b"[]\n", USAGE, "checkpoints.jsonl:1: not a JSON object"),
        ("a NaN", BASE.lines[4].replace(b'"covers":4', b'"covers":NaN'), USAGE,
         "checkpoints.jsonl:1: not a JSON record"),
]  # fmt: skip


@pytest.mark.parametrize("seq", ["x" * 100_000, [0] * 10_000, 2.5, -1])
def test_a_bad_exported_seq_is_named_by_its_type_or_number(seq: object) -> None:
    """``verify``'s error for an exported checkpoint names its seq by type (or the integer
    it is): never the value itself, which may be as large as the file."""
    with pytest.raises(LineError) as raised:
        verify(BASE.lines, checkpoints=[{"kind": "checkpoint", "seq": seq, "hash": "0" * 64}])
    shown = seq if type(seq) is int else type(seq).__name__
    assert str(raised.value).endswith(f"(seq {shown})")
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("name", "text", "code", "message"), EXPORTED, ids=[case[0] for case in EXPORTED]
)
def test_hostile_exported_checkpoints(
    name: str, text: bytes, code: int, message: str, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "audit.jsonl", BASE.lines)
    exported = write_log(tmp_path / "checkpoints.jsonl", [text])
    line = clean(
        run_cli("audit", "verify", str(log), "--from-start", "--checkpoints", str(exported)),
        code,
    ).error(code)
    assert message in line, name
    assert len(line) < 500, name  # one readable line, whatever the file holds


@pytest.mark.parametrize(
    "signature",
    ["!!not base64!!", "AAAA", base64.b64encode(b"\0" * 64).decode(), "00" * 64,
     base64.b64encode(b"\0" * 65).decode(), "é" * 8, ""],
    ids=["not base64", "short", "zeros", "hex", "long", "not ascii", "empty"],
)  # fmt: skip
def test_a_malformed_checkpoint_signature_is_a_bad_signature(
    signature: str, tmp_path: Path, keys: dict[str, Path], tiny_blocks: None
) -> None:
    lines = list(BASE.lines)
    lines[4] = with_member(lines[4], "signature", json.dumps(signature).encode())
    log = write_log(tmp_path / "audit.jsonl", lines)
    assert both([log], public_key=SIGNER.public_key).problem == "bad checkpoint signature"
    line = clean(
        run_cli("audit", "verify", str(log), "--public-key", str(keys["public"])), VERIFY_FAILED
    ).error(VERIFY_FAILED)
    assert line.endswith("line index 4 (line 5), seq 5: bad checkpoint signature")


@pytest.mark.parametrize(
    ("option", "text"),
    [("--public-key", b"not a key"), ("--public-key", b"ab" * 31),
     ("--public-key", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
     ("--public-key", b"\xff\xfe"), ("--key-file", b"zz" * 32), ("--key-file", b"ab" * 16),
     ("--key-file", b""), ("--key-file", b"\xff" * 64)],
    ids=["pk text", "pk short hex", "pk bad pem", "pk not utf-8", "key not hex",
         "key short", "key empty", "key not utf-8"],
)  # fmt: skip
def test_a_malformed_key_file_is_a_usage_error(option: str, text: bytes, tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.jsonl", BASE.lines)
    bad = tmp_path / "bad.key"
    bad.write_bytes(text)
    line = clean(run_cli("audit", "verify", str(log), option, str(bad)), USAGE).error(USAGE)
    assert option in line


# -- encrypted files ---------------------------------------------------------------------------
def _sealed_lines() -> list[bytes]:
    cipher = RecordCipher(KEY)
    return [cipher.seal(line) for line in BASE.lines]


def _garble(line: bytes) -> bytes:
    start = line.index(b'"enc":"') + 20
    return line[:start] + (b"A" if line[start : start + 1] != b"A" else b"B") + line[start + 1 :]


def _cut_ciphertext(line: bytes) -> bytes:
    start = line.index(b'"enc":"') + 7
    return line[:start] + line[start + 40 :]


UNDECODABLE = "cannot be decoded"
ENCRYPTED: dict[str, tuple[Callable[[list[bytes]], list[bytes]], str]] = {
    "a garbled ciphertext": (lambda ls: [*ls[:5], _garble(ls[5]), *ls[6:]], UNDECODABLE),
    "a ciphertext cut short": (
        lambda ls: [*ls[:5], _cut_ciphertext(ls[5]), *ls[6:]], UNDECODABLE,
    ),
    "a ciphertext not base64": (
        lambda ls: [*ls[:5], ls[5].replace(b'"enc":"', b'"enc":"!'), *ls[6:]], UNDECODABLE,
    ),
    "a torn last line": (lambda ls: [*ls[:5], ls[5][:120]], "not a JSON record"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(ENCRYPTED))
def test_a_damaged_encrypted_line_is_named(
    name: str, tmp_path: Path, keys: dict[str, Path]
) -> None:
    damage, message = ENCRYPTED[name]
    log = write_log(tmp_path / "audit.jsonl", damage(_sealed_lines()))
    key = str(keys["key"])
    line = clean(run_cli("audit", "read", str(log), "--key-file", key), USAGE).error(USAGE)
    assert f"{log}:6: {message}" in line
    line = clean(run_cli("audit", "verify", str(log), "--key-file", key), VERIFY_FAILED).error(
        VERIFY_FAILED
    )
    assert "line index 5 (line 6)" in line and "malformed line" in line


# -- bytes the readers refuse, and what is not a file ---------------------------------------
READER_INPUTS: dict[str, tuple[bytes, str]] = {
    "an empty file": (b"", ""),
    "only line breaks": (b"\n\n\n", ":1: not a JSON record"),
    "a UTF-8 BOM": (b"\xef\xbb\xbf" + b"".join(BASE.lines), ":1: not a JSON record"),
    "invalid UTF-8": (
        b"".join([BASE.lines[0], BASE.lines[1].replace(b"node-1", b"node\xff1")]),
        ":2: not a JSON record",
    ),
    "a lone surrogate": (
        b"".join([BASE.lines[0], BASE.lines[1].replace(b'"node-1"', b'"\\ud800"')]),
        ":2: not a JSON record",
    ),
    "a NUL byte": (BASE.lines[0].replace(b"node-1", b"node\x001"), ":1: not a JSON record"),
    "a line of 10 MiB": (b"x" * (10 << 20) + b"\n", f":1: a line over {MAX_LINE_BYTES} bytes"),
}


@pytest.mark.parametrize("name", sorted(READER_INPUTS))
@pytest.mark.parametrize("command", ["read", "search"])
def test_the_readers_refuse_bytes_no_writer_writes(
    name: str, command: str, tmp_path: Path, keys: dict[str, Path]
) -> None:
    data, message = READER_INPUTS[name]
    log = tmp_path / "audit.jsonl"
    log.write_bytes(data)
    args = (
        ("read", str(log), "--key-file", str(keys["key"]))
        if command == "read"
        else ("search", "--file", str(log))
    )
    result = clean(run_cli("audit", *args), *((0,) if not message else (USAGE,)))
    if message:
        assert message in result.error(USAGE)


def _not_a_file(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    if kind == "a directory":
        path.mkdir()
    elif kind == "a FIFO":
        os.mkfifo(path)
    elif kind == "a symlink loop":
        path.symlink_to(path)
    elif kind == "a dangling symlink":
        path.symlink_to(tmp_path / "gone.jsonl")
    elif kind == "an unreadable file":
        write_log(path, BASE.lines).chmod(0)
    else:
        return Path("/dev/null")
    return path


@pytest.mark.parametrize(
    "kind",
    ["a directory", "a FIFO", "a symlink loop", "a dangling symlink", "/dev/null",
     pytest.param("an unreadable file", marks=pytest.mark.skipif(
         os.geteuid() == 0, reason="root reads a file of mode 0"))],
)  # fmt: skip
@pytest.mark.parametrize("command", ["verify", "read", "search", "checkpoints"])
def test_what_is_not_a_readable_file_is_a_usage_error(
    kind: str, command: str, tmp_path: Path, keys: dict[str, Path]
) -> None:
    path = _not_a_file(kind, tmp_path)
    log = write_log(tmp_path / "log.jsonl", BASE.lines)
    args = {
        "verify": ("verify", str(path)),
        "read": ("read", str(path), "--key-file", str(keys["key"])),
        "search": ("search", "--file", str(path)),
        "checkpoints": ("verify", str(log), "--checkpoints", str(path)),
    }[command]
    line = clean(run_cli("audit", *args), USAGE).error(USAGE)
    assert f"cannot read {path}" in line


def test_big_records_in_a_chain_are_named_with_workers_as_alone(tmp_path: Path) -> None:
    """Records of almost ``MAX_LINE_BYTES``, then one of 3 MiB across the first cut of the
    default blocks (4 MiB): with workers, the first bad record is the one the single
    process names."""
    maker = ChainMaker(seed=9)
    for size in (MAX_LINE_BYTES - 2000, MAX_LINE_BYTES - 2000, 3 << 20):
        maker.append(AuditEvent(kind="request", time=maker.tick(), operation="sys.health"))
        maker.request_pair(user_agent="u" * size)
    log = write_log(tmp_path / "audit.jsonl", maker.lines)
    report = both([log])
    assert (report.first_bad_index, report.problem) == (7, PROBLEM_LONG), report
