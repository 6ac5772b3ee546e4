"""RecordCipher: sealed lines keep the chain checkable; tampering, moving and wrong keys fail."""

from __future__ import annotations

import base64
import itertools
import os
import pickle

import pytest

from medsecrets.audit.crypt import RecordCipher, is_sealed
from medsecrets.audit.record import body_digest, split_line
from medsecrets.errors import ConfigError, DecryptionError, InvalidRequest
from tests.audit.chainmaker import make_log


@pytest.fixture
def cipher() -> RecordCipher:
    return RecordCipher(os.urandom(32))


def test_round_trip_keeps_prev_seq_hash_in_place(cipher: RecordCipher) -> None:
    lines = make_log(5).lines
    sealed = [cipher.seal(line) for line in lines]
    for plain, stored in zip(lines, sealed, strict=True):
        assert stored.endswith(b"\n") and stored.count(b"\n") == 1
        assert split_line(stored) == split_line(plain)
        assert b'"kind":"sealed"' in stored
        assert b'"request_id"' not in stored
        assert is_sealed(stored) and not is_sealed(plain)
        assert cipher.open(stored) == plain
        assert body_digest(cipher.open(stored)) == split_line(stored)[2]
    for before, after in itertools.pairwise(sealed):  # links checkable without key
        assert split_line(after)[0] == split_line(before)[2]


def test_a_line_without_newline_is_sealed_as_a_full_line(cipher: RecordCipher) -> None:
    line = make_log(1).lines[0]
    assert cipher.open(cipher.seal(line[:-1])) == line


def test_nonces_differ(cipher: RecordCipher) -> None:
    line = make_log(1).lines[0]
    assert cipher.seal(line) != cipher.seal(line)


def _enc_span(stored: bytes) -> tuple[int, int]:
    start = stored.index(b'"enc":"') + len(b'"enc":"')
    return start, stored.index(b'"', start)


def test_tampered_ciphertext_fails(cipher: RecordCipher) -> None:
    stored = cipher.seal(make_log(1).lines[0])
    start, end = _enc_span(stored)
    blob = base64.b64decode(stored[start:end])
    for position in (0, 11, 12, len(blob) // 2, len(blob) - 1):  # nonce, body, tag
        flipped = bytearray(blob)
        flipped[position] ^= 0x01
        bad = stored[:start] + base64.b64encode(bytes(flipped)) + stored[end:]
        with pytest.raises(DecryptionError):
            cipher.open(bad)
    with pytest.raises(DecryptionError):  # truncated
        cipher.open(stored[:start] + base64.b64encode(blob[:-1]) + stored[end:])
    with pytest.raises(DecryptionError):  # not base64
        cipher.open(stored[:start] + b"!!!!" + stored[end:])


def test_wrong_key_fails(cipher: RecordCipher) -> None:
    stored = cipher.seal(make_log(1).lines[0])
    with pytest.raises(DecryptionError):
        RecordCipher(os.urandom(32)).open(stored)


def test_moved_or_relabelled_record_fails(cipher: RecordCipher) -> None:
    first, second = (cipher.seal(line) for line in make_log(2).lines)
    start, end = _enc_span(second)
    moved = first[:start] + second[start:end] + first[end:]  # record 2's body under record 1
    with pytest.raises(DecryptionError):
        cipher.open(moved)
    renumbered = second.replace(b'"seq":2,', b'"seq":3,')
    assert split_line(renumbered)[1] == 3
    with pytest.raises(DecryptionError):
        cipher.open(renumbered)
    prev = split_line(second)[0].encode()
    relinked = second.replace(prev, b"f" * 64)
    with pytest.raises(DecryptionError):
        cipher.open(relinked)


def test_plain_or_garbage_lines_do_not_open(cipher: RecordCipher) -> None:
    for line in (make_log(1).lines[0], b"", b"not a record\n"):
        with pytest.raises(DecryptionError):
            cipher.open(line)
    with pytest.raises(InvalidRequest):
        cipher.seal(b'{"not":"a record"}\n')


def test_key_is_masked_checked_and_not_picklable() -> None:
    key = bytes(range(32))
    cipher = RecordCipher.from_hex(key.hex())
    assert key.hex() not in repr(cipher) and "*" in repr(cipher)
    with pytest.raises(TypeError):
        pickle.dumps(cipher)
    assert RecordCipher(key).open(cipher.seal(make_log(1).lines[0])) == make_log(1).lines[0]
    with pytest.raises(ConfigError):
        RecordCipher(b"k" * 31)
    with pytest.raises(ConfigError):
        RecordCipher.from_hex("zz" * 32)
