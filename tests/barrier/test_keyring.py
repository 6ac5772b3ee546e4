from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from medsecrets.barrier.keyring import Keyring, KeyTerm
from medsecrets.errors import StorageError
from medsecrets.sensitive import Sensitive

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def make() -> Keyring:
    return Keyring.new(Sensitive(K1), T0).with_new_term(Sensitive(K2), T0 + dt.timedelta(days=1))


def test_new_term_is_active_and_keyring_is_immutable() -> None:
    one = Keyring.new(Sensitive(K1), T0)
    two = one.with_new_term(Sensitive(K2), T0)
    assert [t.term for t in one.terms] == [1]
    assert [t.term for t in two.terms] == [1, 2]
    assert two.active.term == 2
    assert two.active.key.reveal() == K2
    term1 = two.term(1)
    assert term1 is not None and term1.key.reveal() == K1
    assert two.term(3) is None
    with pytest.raises(AttributeError):
        two.terms = ()  # type: ignore[misc]


def test_roundtrip_serialization() -> None:
    ring = make()
    data = ring.serialize()
    assert isinstance(data, Sensitive)
    doc = json.loads(data.reveal())
    assert doc["terms"][0]["key"] == base64.b64encode(K1).decode()
    back = Keyring.deserialize(data)
    assert [(t.term, t.key.reveal(), t.installed_at) for t in back.terms] == [
        (t.term, t.key.reveal(), t.installed_at) for t in ring.terms
    ]


def test_repr_never_shows_key_material() -> None:
    ring = make()
    texts = [repr(ring), str(ring), repr(ring.terms), repr(ring.active), repr(ring.serialize())]
    for text in texts:
        for key in (K1, K2):
            assert key.hex() not in text
            assert base64.b64encode(key).decode() not in text
            assert repr(key) not in text
    assert "1" in repr(ring) and "2" in repr(ring)


@pytest.mark.parametrize(
    "doc",
    [
        b"not json",
        b"[]",
        b'{"format": 2, "terms": []}',
        b'{"format": 1, "terms": []}',
        b'{"format": 1, "terms": [], "extra": 1}',
        b'{"format": 1, "terms": [{"term": 1, "key": "!!!", "installed_at": "2026-01-01"}]}',
        b'{"format": 1, "terms": [{"term": 1, "key": "AAAA", "installed_at": "2026-01-01"}]}',
        b'{"format": 1, "terms": [{"term": "1", "key": "AAAA", "installed_at": "x"}]}',
    ],
)
def test_malformed_documents_are_refused(doc: bytes) -> None:
    with pytest.raises(StorageError):
        Keyring.deserialize(doc)


def test_terms_must_increase_and_keys_be_32_bytes() -> None:
    with pytest.raises(ValueError):
        Keyring((KeyTerm(2, Sensitive(K1), T0), KeyTerm(1, Sensitive(K2), T0)))
    with pytest.raises(ValueError):
        KeyTerm(1, Sensitive(b"short"), T0)
    with pytest.raises(ValueError):
        KeyTerm(0, Sensitive(K1), T0)
    with pytest.raises(ValueError):
        KeyTerm(1, Sensitive(K1), dt.datetime(2026, 1, 1))
