"""The versioned secrets engine, through the store facade on real SQLite."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medsecrets.clock import ManualClock
from medsecrets.errors import (
    CasConflictError,
    ConflictError,
    DecryptionError,
    InvalidRequest,
    NotFoundError,
    ScheduledForDeletion,
    SealedError,
    StorageError,
    TooLargeError,
    ValidationError,
)
from medsecrets.keys.envelope import Opener
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

AUTH = "medessence/production/auth"
DB = "medessence/production/database"


def auth_value(store: SecretStore) -> dict[str, str]:
    return store.catalog.category("auth").build({}, development=False)


def test_put_then_get_current(store: SecretStore) -> None:
    value = auth_value(store)
    info = store.secrets.put(AUTH, value)
    assert info.number == 1
    assert info.stages == ("current",)
    got = store.secrets.get(AUTH)
    assert got.fields == value
    assert got.number == 1
    assert got.id == info.id
    assert "current" in got.stages


def test_versions_and_stages_follow_aws_labels(store: SecretStore) -> None:
    v1, v2, v3 = (auth_value(store) for _ in range(3))
    store.secrets.put(AUTH, v1)
    store.secrets.put(AUTH, v2)
    assert store.secrets.get(AUTH, stage="previous").fields == v1
    assert store.secrets.get(AUTH).fields == v2
    pending = store.secrets.put(AUTH, v3, stage="pending")
    assert pending.stages == ("pending",)
    assert store.secrets.get(AUTH).fields == v2  # pending does not move current
    assert store.secrets.get(AUTH, stage="pending").fields == v3
    meta = store.secrets.move_stage(AUTH, "current", 3)
    assert meta.current_version == 3
    by_number = {v.number: v.stages for v in meta.versions}
    assert by_number == {1: (), 2: ("previous",), 3: ("current",)}
    # read by number and by id
    assert store.secrets.get(AUTH, version=1).fields == v1
    assert store.secrets.get(AUTH, version_id=meta.versions[1].id).fields == v2
    # back to 2 (roll back): 3 becomes previous
    meta = store.secrets.move_stage(AUTH, "current", 2)
    assert {v.number: v.stages for v in meta.versions}[3] == ("previous",)
    assert store.secrets.get(AUTH).fields == v2


def test_promoting_a_pending_version_is_a_rotation(store: SecretStore, clock: ManualClock) -> None:
    """The AWS rotation flow (write pending, test, promote) moves the rotation schedule
    as a write as current does; a rollback to an older version does not."""
    store.secrets.put(DB, store.catalog.category("database").build({}, development=True))
    meta = store.secrets.describe(DB)
    assert meta.last_rotated_at is None
    first_due = meta.next_rotation_due
    clock.advance(days=10)
    store.secrets.put(DB, store.catalog.category("database").build({}, development=True),
                      stage="pending")  # fmt: skip
    assert store.secrets.describe(DB).last_rotated_at is None  # pending: not yet
    clock.advance(days=1)
    meta = store.secrets.move_stage(DB, "current", 2)
    assert meta.last_rotated_at == clock.now()
    assert meta.next_rotation_due == clock.now() + dt.timedelta(days=90) != first_due
    assert store.secrets.describe(DB).last_rotated_at == clock.now()
    promoted = clock.now()
    clock.advance(days=1)
    meta = store.secrets.move_stage(DB, "current", 1)  # a rollback: no rotation
    assert meta.last_rotated_at == promoted
    assert meta.next_rotation_due == promoted + dt.timedelta(days=90)


def test_read_errors_name_what_is_missing(store: SecretStore) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        store.secrets.get(AUTH)
    store.secrets.put(AUTH, auth_value(store))
    with pytest.raises(NotFoundError, match="no version 9"):
        store.secrets.get(AUTH, version=9)
    with pytest.raises(NotFoundError, match="no 'pending' version"):
        store.secrets.get(AUTH, stage="pending")
    with pytest.raises(NotFoundError, match="version id"):
        store.secrets.get(AUTH, version_id="nope")
    with pytest.raises(InvalidRequest):
        store.secrets.get(AUTH, stage="current", version=1)
    with pytest.raises(InvalidRequest):
        store.secrets.get(AUTH, stage="bogus")  # type: ignore[arg-type]


def test_check_and_set(store: SecretStore) -> None:
    store.secrets.put(AUTH, auth_value(store), cas=0)
    with pytest.raises(CasConflictError):
        store.secrets.put(AUTH, auth_value(store), cas=0)
    store.secrets.put(AUTH, auth_value(store), cas=1)
    with pytest.raises(CasConflictError, match="at version 2, not 1"):
        store.secrets.put(AUTH, auth_value(store), cas=1)
    with pytest.raises(CasConflictError):
        store.secrets.put("medessence/production/auth/other", auth_value(store), cas=3)
    assert len(store.secrets.versions(AUTH)) == 2


def test_check_and_set_survives_a_concurrent_metadata_change(
    store: SecretStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cas=n`` asks that the newest version is n: another process changing only the
    metadata (or writing an access time) between the read and the write is no conflict,
    a version added meanwhile is."""
    other = SecretStore(SqliteStorage(tmp_path / "store.db"))
    other.auto_unseal()
    other.secrets.put(AUTH, auth_value(other))  # this store's write starts from a read
    secure = store.secrets._secure
    real = secure.batch
    meddle: list[Callable[[], object]] = [
        lambda: other.secrets.update_metadata(AUTH, description="changed meanwhile")
    ]

    def batch(ops: Any) -> Any:  # the other process acts just before this write lands
        if meddle:
            meddle.pop()()
        return real(ops)

    monkeypatch.setattr(secure, "batch", batch)
    try:
        assert store.secrets.put(AUTH, auth_value(store), cas=1).number == 2
        assert store.secrets.describe(AUTH).description == "changed meanwhile"
        meddle.append(lambda: other.secrets.put(AUTH, auth_value(other)))
        with pytest.raises(CasConflictError, match="at version 3, not 2"):
            store.secrets.put(AUTH, auth_value(store), cas=2)
    finally:
        other.close()


def test_max_versions_prunes_oldest_unstaged(tmp_path: Path, clock: ManualClock) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "s.db"), clock=clock, max_versions=3)
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    values = [auth_value(store) for _ in range(6)]
    store.secrets.put(AUTH, values[0])
    store.secrets.put(AUTH, values[1])
    store.secrets.put(AUTH, values[2], stage="pending")
    store.secrets.move_stage(AUTH, "previous", 1)  # pin version 1
    for v in values[3:]:
        store.secrets.put(AUTH, v)
    kept = [v.number for v in store.secrets.versions(AUTH)]
    assert len(kept) == 3
    assert 6 in kept  # current
    assert store.secrets.get(AUTH).fields == values[5]
    with pytest.raises(NotFoundError):
        store.secrets.get(AUTH, version=1)  # pruned after its stage moved on
    store.close()


def test_staged_versions_are_never_pruned(tmp_path: Path, clock: ManualClock) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "s.db"), clock=clock, max_versions=3)
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    first = auth_value(store)
    store.secrets.put(AUTH, first)
    store.secrets.put(AUTH, auth_value(store), stage="pending")  # v2 pending forever
    for _ in range(5):
        store.secrets.put(AUTH, auth_value(store))
    staged = {v.number: v.stages for v in store.secrets.versions(AUTH) if v.stages}
    assert staged[2] == ("pending",)
    assert store.secrets.get(AUTH, stage="pending").number == 2
    store.close()


def test_soft_delete_restore_and_sweeper(store: SecretStore, clock: ManualClock) -> None:
    values = [auth_value(store) for _ in range(3)]
    for v in values:
        store.secrets.put(AUTH, v)
    meta = store.secrets.delete(AUTH, recovery_days=7)
    assert meta.purge_at == clock.now() + dt.timedelta(days=7)
    with pytest.raises(ScheduledForDeletion, match=r"scheduled for deletion on \d{4}-\d{2}-\d{2}"):
        store.secrets.get(AUTH)
    with pytest.raises(ScheduledForDeletion):
        store.secrets.put(AUTH, values[0])
    assert store.secrets.list("medessence/").items == ()
    assert len(store.secrets.list("medessence/", include_deleted=True).items) == 1
    store.secrets.restore(AUTH)
    for number, v in enumerate(values, start=1):
        assert store.secrets.get(AUTH, version=number).fields == v
    with pytest.raises(ConflictError):
        store.secrets.restore(AUTH)
    store.secrets.delete(AUTH)  # default 30 days
    clock.advance(days=29)
    assert store.secrets.purge_expired() == []
    clock.advance(days=1)
    assert store.secrets.purge_expired() == [AUTH]
    with pytest.raises(NotFoundError):
        store.secrets.describe(AUTH)
    assert store.storage.list("secrets/").keys == ()  # every version's material is gone


def test_the_sweeper_never_purges_a_secret_restored_after_it_looked(
    store: SecretStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = auth_value(store)
    store.secrets.put(AUTH, value)
    store.secrets.delete(AUTH, recovery_days=7)
    clock.advance(days=8)
    listed = store.secrets._records

    def records(prefix: str, *, after: str = "") -> Any:
        for record in listed(prefix, after=after):
            store.secrets.restore(record.path)  # an operator, just after the sweeper listed
            yield record

    monkeypatch.setattr(store.secrets, "_records", records)
    assert store.secrets.purge_expired() == []
    assert store.secrets.get(AUTH).fields == value


def test_recovery_window_bounds_and_force(store: SecretStore) -> None:
    store.secrets.put(AUTH, auth_value(store))
    for days in (6, 31, 0):
        with pytest.raises(InvalidRequest, match="7 to 30"):
            store.secrets.delete(AUTH, recovery_days=days)
    store.secrets.delete(AUTH, force=True)
    with pytest.raises(NotFoundError):
        store.secrets.get(AUTH)
    store.secrets.put(AUTH, auth_value(store), cas=0)  # the name is free again


def test_destroy_erases_one_version(store: SecretStore) -> None:
    v1, v2 = auth_value(store), auth_value(store)
    store.secrets.put(AUTH, v1)
    store.secrets.put(AUTH, v2)
    with pytest.raises(ConflictError, match="is current"):
        store.secrets.destroy(AUTH, 2)
    meta = store.secrets.destroy(AUTH, 1)
    assert [v.destroyed for v in meta.versions] == [True, False]
    with pytest.raises(NotFoundError, match="destroyed"):
        store.secrets.get(AUTH, version=1)
    with pytest.raises(NotFoundError):
        store.secrets.get(AUTH, stage="previous")  # the stage went with it
    assert store.secrets.get(AUTH).fields == v2
    with pytest.raises(ConflictError):
        store.secrets.move_stage(AUTH, "current", 1)


def test_metadata_and_rotation_schedule(store: SecretStore, clock: ManualClock) -> None:
    created = clock.now()
    value = store.catalog.category("database").build({}, development=True)
    store.secrets.put(DB, value, description="primary db", owner="team-data", tags={"tier": "gold"})
    meta = store.secrets.describe(DB)
    assert (meta.environment, meta.category) == ("production", "database")
    assert (meta.description, meta.owner, dict(meta.tags)) == (
        "primary db",
        "team-data",
        {"tier": "gold"},
    )
    assert meta.rotation.interval_days == 90
    assert meta.next_rotation_due == created + dt.timedelta(days=90)
    assert meta.last_rotated_at is None
    clock.advance(days=10)
    store.secrets.put(DB, value)
    meta = store.secrets.describe(DB)
    assert meta.last_rotated_at == clock.now()
    assert meta.next_rotation_due == clock.now() + dt.timedelta(days=90)
    meta = store.secrets.update_metadata(DB, rotation_days=30)
    assert meta.rotation.overridden and meta.rotation.interval_days == 30
    meta = store.secrets.update_metadata(DB, clear_rotation_override=True)
    assert meta.rotation.interval_days == 90
    with pytest.raises(InvalidRequest):
        store.secrets.update_metadata(DB, rotation_days=-1)


def test_last_accessed_is_coarse(store: SecretStore, clock: ManualClock) -> None:
    store.secrets.put(AUTH, auth_value(store))
    assert store.secrets.describe(AUTH).last_accessed_at is None
    store.secrets.get(AUTH)
    first = store.secrets.describe(AUTH).last_accessed_at
    assert first == clock.now()
    clock.advance(600)
    store.secrets.get(AUTH)
    assert store.secrets.describe(AUTH).last_accessed_at == first  # within the hour: no write
    clock.advance(3600)
    store.secrets.get(AUTH)
    assert store.secrets.describe(AUTH).last_accessed_at == clock.now()


def test_a_read_leaves_updated_at_alone(store: SecretStore, clock: ManualClock) -> None:
    """The access-time write is bookkeeping: ``updated_at`` reports the last change only."""
    store.secrets.put(AUTH, auth_value(store))
    written = store.secrets.describe(AUTH).updated_at
    clock.advance(600)
    store.secrets.get(AUTH)  # the first read: it writes the access time
    meta = store.secrets.describe(AUTH)
    assert meta.last_accessed_at == clock.now()
    assert meta.updated_at == written
    clock.advance(7200)
    store.secrets.get(AUTH)  # a later hour: written again, still no change
    assert store.secrets.describe(AUTH).updated_at == written
    store.secrets.update_metadata(AUTH, owner="team-auth")  # a real change moves it
    assert store.secrets.describe(AUTH).updated_at == clock.now()


def test_a_read_never_fails_on_its_access_time_write(
    store: SecretStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The access time is bookkeeping: a storage refusing the write (its lock held
    elsewhere, a failed fsync, read-only) must not fail the read, nor be retried by each."""
    value = auth_value(store)
    store.secrets.put(AUTH, value)
    attempts: list[int] = []

    def refuse(ops: object) -> None:  # an injected storage failure
        attempts.append(1)
        raise StorageError("injected: the database is read-only")

    monkeypatch.setattr(store.storage, "batch", refuse)
    for _ in range(3):
        assert store.secrets.get(AUTH).fields == value
    assert len(attempts) == 1  # claimed once, not retried by every read
    clock.advance(61)
    assert store.secrets.get(AUTH).fields == value
    assert len(attempts) == 2
    assert store.secrets.describe(AUTH).last_accessed_at is None


def test_rotation_periods_per_category(store: SecretStore) -> None:
    expected = {
        "database": 90,
        "ai-providers": 180,
        "medical-encryption": 365,
        "auth": 30,
        "external-services": 180,
    }
    store.provision("development")
    for category, days in expected.items():
        meta = store.secrets.describe(f"medessence/development/{category}")
        assert meta.rotation.interval_days == days


def test_list_and_search(store: SecretStore) -> None:
    store.provision("development")
    for env in ("production", "staging"):
        store.secrets.put(f"medessence/{env}/auth", auth_value(store), tags={"env": env})
        store.secrets.put(f"medessence/{env}/auth/svc-a", auth_value(store), tags={"team": "a"})
    everything = store.secrets.list()
    assert len(everything.items) == 5 + 4
    assert [m.path for m in everything.items] == sorted(m.path for m in everything.items)
    assert {m.path for m in store.secrets.list(environment="staging").items} == {
        "medessence/staging/auth",
        "medessence/staging/auth/svc-a",
    }
    assert len(store.secrets.list(category="auth").items) == 5
    assert [m.path for m in store.secrets.list(tags={"team": "a"}).items] == [
        "medessence/production/auth/svc-a",
        "medessence/staging/auth/svc-a",
    ]
    assert len(store.secrets.list("medessence/production/").items) == 2
    # pagination covers every secret exactly once
    seen: list[str] = []
    after = None
    while True:
        page = store.secrets.list(limit=2, after=after)
        seen += [m.path for m in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [m.path for m in everything.items]
    # metadata never carries values
    assert not hasattr(everything.items[0], "fields")


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("medessence/production/../auth", "'..'"),
        ("medessence/production/./auth", "'.'"),
        ("medessence/production/auth/a\x00b", "control character"),
        ("medessence/production/auth/a\nb", "control character"),
        ("medessence/production/" + "a" * 10_000, "longer than 512"),
        ("medessence/production/unknown-cat", "not in the catalog"),
        ("other/production/auth", "must start with 'medessence'"),
        ("medessence/Production/auth", "lower case"),
        ("medessence/production", "must look like"),
        ("medessence//production/auth", "empty segment"),
        ("medessence/production/auth/%2e%2e", "may only contain"),
        ("medessence/production/auth/a b", "may only contain"),
    ],
)
def test_bad_paths_are_refused_with_the_rule(store: SecretStore, path: str, rule: str) -> None:
    with pytest.raises(InvalidRequest, match=rule.replace(".", r"\.").replace("(", r"\(")):
        store.secrets.put(path, auth_value(store))
    assert store.storage.list("secrets/").keys == ()


def test_bad_values_are_refused_and_nothing_is_written(store: SecretStore) -> None:
    with pytest.raises(InvalidRequest):
        store.secrets.put(AUTH, {})
    with pytest.raises(InvalidRequest, match="must be a string"):
        store.secrets.put(AUTH, {"jwt_secret": 5})  # type: ignore[dict-item]
    with pytest.raises(InvalidRequest, match="field name"):
        store.secrets.put(AUTH, {"bad name": "x"})
    with pytest.raises(ValidationError, match="not declared"):
        store.secrets.put(AUTH, {"surprise": "x"})
    with pytest.raises(ValidationError, match="jwt_secret"):
        store.secrets.put(AUTH, {"jwt_secret": "short"})
    with pytest.raises(TooLargeError):
        store.secrets.put(
            "medessence/production/external-services",
            {"monitoring_tokens": "x" * (65 * 1024)},
        )
    assert store.storage.list("secrets/").keys == ()


def test_envelope_binds_path_and_version(store: SecretStore) -> None:
    """A data record copied (through the barrier) to another secret does not decrypt."""
    store.secrets.put(AUTH, auth_value(store))
    other = "medessence/production/auth/svc"
    store.secrets.put(other, auth_value(store))
    store.secrets.put(other, auth_value(store))
    ids = {m.path: m.id for m in store.secrets.list().items}
    src = store.barrier.get(f"secrets/data/{ids[AUTH]}/{1:010d}")
    assert src is not None
    store.barrier.put(f"secrets/data/{ids[other]}/{1:010d}", src)
    with pytest.raises(DecryptionError):
        store.secrets.get(other, version=1)
    assert store.secrets.get(other, version=2).number == 2


def test_sealed_store_refuses_everything(store: SecretStore) -> None:
    store.secrets.put(AUTH, auth_value(store))
    store.seal()
    for call in (
        lambda: store.secrets.get(AUTH),
        lambda: store.secrets.put(AUTH, auth_value(store)),
        store.secrets.list,
        lambda: store.secrets.describe(AUTH),
        lambda: store.secrets.delete(AUTH),
        lambda: store.provision("development"),
        lambda: store.rotate_key("auth"),
        store.rewrap,
    ):
        with pytest.raises(SealedError):
            call()
    store.auto_unseal()
    assert store.secrets.get(AUTH).number == 1


def test_a_stale_remembered_record_never_decides(tmp_path: Path, clock: ManualClock) -> None:
    """The engine tries the record it wrote last first; another writer makes that stale."""
    db = tmp_path / "shared.db"
    ours = SecretStore(SqliteStorage(db), clock=clock)
    ours.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    theirs = SecretStore(SqliteStorage(db), clock=clock)
    theirs.auto_unseal()
    ours.secrets.put(AUTH, auth_value(ours))  # v1, remembered by ours
    theirs.secrets.put(AUTH, auth_value(theirs))  # v2 behind our back
    with pytest.raises(CasConflictError, match="at version 2, not 1"):
        ours.secrets.put(AUTH, auth_value(ours), cas=1)
    assert ours.secrets.put(AUTH, auth_value(ours), cas=2).number == 3
    theirs.secrets.put(AUTH, auth_value(theirs))  # v4
    assert ours.secrets.put(AUTH, auth_value(ours)).number == 5  # retried on a fresh read
    assert [v.number for v in theirs.secrets.versions(AUTH)] == [1, 2, 3, 4, 5]
    theirs.secrets.delete(AUTH)
    with pytest.raises(ScheduledForDeletion):
        ours.secrets.put(AUTH, auth_value(ours))
    theirs.secrets.restore(AUTH)
    ours.secrets.put(AUTH, auth_value(ours), cas=5)
    ours.close()
    theirs.close()


@pytest.mark.parametrize("cache_values", [True, False])
def test_value_cache_decides_whether_a_repeated_read_decrypts(
    tmp_path: Path, cache_values: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SecretStore(SqliteStorage(tmp_path / "s.db"), cache_values=cache_values)
    store.initialize(KeyFileSealConfig(str(tmp_path / "k")))
    value = auth_value(store)
    store.secrets.put(AUTH, value)
    store.secrets.get(AUTH)  # the first read records its access time: a new record
    opened: list[int] = []
    real_open = Opener.open

    def counting_open(self: Opener) -> bytes:
        opened.append(1)
        return real_open(self)

    monkeypatch.setattr(Opener, "open", counting_open)
    for _ in range(3):
        assert store.secrets.get(AUTH).fields == value
    assert len(opened) == (1 if cache_values else 3)
    newer = auth_value(store)
    store.secrets.put(AUTH, newer)
    assert store.secrets.get(AUTH).fields == newer  # a changed record is never served stale
    store.close()
