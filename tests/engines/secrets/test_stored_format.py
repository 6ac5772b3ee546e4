"""Stored records stay readable both ways: the old encoder's by this code, this code's by JSON.

Metadata and data records were once written by the standard library's JSON
encoder (non-ASCII as ``\\uXXXX``) and are now written by orjson (UTF-8);
both are the same JSON documents, so either reader reads either.
"""

from __future__ import annotations

import json
import time
import uuid

from medsecrets.keys.envelope import SealedValue
from medsecrets.store import SecretStore

AUTH = "medessence/production/auth"
META = f"secrets/meta/{AUTH}"


def _value(store: SecretStore) -> dict[str, str]:
    return store.catalog.category("auth").build({}, development=False)


def _data_key(store: SecretStore, number: int) -> str:
    return f"secrets/data/{store.secrets.describe(AUTH).id}/{number:010d}"


def test_records_written_now_are_plain_json(store: SecretStore) -> None:
    value = _value(store)
    store.secrets.put(AUTH, value, description="clé — ünïcode 🗝", owner="équipe")
    raw = store.barrier.get(META)
    assert raw is not None
    doc = json.loads(raw)  # the standard library (the old reader) reads it
    assert doc["desc"] == "clé — ünïcode 🗝"
    assert doc["owner"] == "équipe"
    assert doc["stages"] == {"current": 1}
    data = store.barrier.get(_data_key(store, 1))
    assert data is not None
    assert json.loads(data) == doc["inline"]["v"]
    assert SealedValue.loads(data) == SealedValue.from_json(json.loads(data))


def test_records_written_by_the_old_encoder_are_read_and_updated(store: SecretStore) -> None:
    first, second = _value(store), _value(store)
    store.secrets.put(AUTH, first, description="clé", tags={"team": "données"})
    data_key = _data_key(store, 1)
    written_now = store.barrier.get(META)
    for key in (META, data_key):  # rewrite both as the old code wrote them
        raw = store.barrier.get(key)
        assert raw is not None
        old = json.dumps(json.loads(raw), separators=(",", ":")).encode()
        assert old.isascii()
        store.barrier.put(key, old)
    assert store.barrier.get(META) != written_now  # the metadata record did change (its escapes)
    store.secrets.forget()  # no cached view or remembered record: read what is stored
    assert store.secrets.get(AUTH).fields == first
    assert store.secrets.get(AUTH, version=1).fields == first
    meta = store.secrets.describe(AUTH)
    assert meta.description == "clé"
    assert meta.tags == {"team": "données"}
    info = store.secrets.put(AUTH, second, cas=1)  # the Expect matches the old record
    assert info.number == 2
    assert store.secrets.get(AUTH).fields == second
    assert store.secrets.get(AUTH, stage="previous").fields == first  # from the old data record


def test_data_records_of_secrets_created_in_turn_sort_in_turn(store: SecretStore) -> None:
    value = _value(store)
    paths = [f"{AUTH}/svc-{i}" for i in range(3)]
    for path in paths:
        store.secrets.put(path, value)
        time.sleep(0.002)  # a later millisecond
    ids = [store.secrets.describe(path).id for path in paths]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    keys = [f"secrets/data/{i}/{1:010d}" for i in ids]
    assert sorted(keys) == keys  # side by side in the store's key order, by creation
    listed = [k for k in store.barrier.list("secrets/data/").keys if k in keys]
    assert listed == keys
