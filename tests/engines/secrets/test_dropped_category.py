"""Secrets whose category the catalog has dropped since they were written (``catalog_file``).

They stay listable, describable and purgeable, and walking the store (list, rewrap, the
sweeper) never fails on them; new writes to a category the catalog lacks are still refused.
Real SQLite stores: one opened with the default catalog, then again without a category.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from medsecrets.catalog.loader import default_catalog
from medsecrets.clock import ManualClock
from medsecrets.errors import InvalidRequest, NotFoundError
from medsecrets.schema.seal import KeyFileSealConfig
from medsecrets.server.sweeper import Sweeper
from medsecrets.storage.sqlite import SqliteStorage
from medsecrets.store import SecretStore

DROPPED = "external-services"
ORPHAN = f"medessence/production/{DROPPED}/relay"
AUTH = "medessence/production/auth"
LATER = "medessence/staging/auth/late"  # sorts after the orphan (AUTH sorts before it)


@pytest.fixture
def reopened(tmp_path: Path, clock: ManualClock) -> Iterator[SecretStore]:
    """A store written with the default catalog, reopened with one lacking ``DROPPED``."""
    first = SecretStore(SqliteStorage(tmp_path / "s.db"), clock=clock)
    first.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
    first.secrets.put(ORPHAN, {"smtp_password": "relay-pass-1"})
    first.secrets.put(ORPHAN, {"smtp_password": "relay-pass-2"})
    for path in (AUTH, LATER):
        first.secrets.put(path, first.catalog.category("auth").build({}, development=False))
    first.close()
    full = default_catalog()
    catalog = dataclasses.replace(
        full, categories={n: c for n, c in full.categories.items() if n != DROPPED}
    )
    store = SecretStore(SqliteStorage(tmp_path / "s.db"), clock=clock, catalog=catalog)
    store.auto_unseal()
    yield store
    store.close()


def test_listing_and_describing_keep_working(reopened: SecretStore) -> None:
    secrets = reopened.secrets
    assert [m.path for m in secrets.list().items] == [AUTH, ORPHAN, LATER]
    assert [m.path for m in secrets.list("medessence/production/").items] == [AUTH, ORPHAN]
    page = secrets.list(limit=1, after=AUTH)
    assert ([m.path for m in page.items], page.next_after) == ([ORPHAN], ORPHAN)
    meta = secrets.describe(ORPHAN)
    assert (meta.category, meta.current_version) == (DROPPED, 2)
    # no policy any more: no schedule, unless the secret overrides it
    assert (meta.rotation.interval_days, meta.rotation.strategy) == (0, "manual")
    assert meta.next_rotation_due is None
    meta = secrets.update_metadata(ORPHAN, rotation_days=30, owner="team-mail")
    assert meta.rotation.interval_days == 30 and meta.next_rotation_due is not None
    assert [v.number for v in secrets.versions(ORPHAN)] == [1, 2]
    assert [m.category for m in secrets.list(category=DROPPED).items] == [DROPPED]


def test_new_writes_to_the_dropped_category_are_refused(reopened: SecretStore) -> None:
    secrets = reopened.secrets
    with pytest.raises(InvalidRequest, match="not in the catalog"):
        secrets.put(ORPHAN, {"smtp_password": "relay-pass-3"})
    with pytest.raises(InvalidRequest, match="not in the catalog"):
        secrets.put(f"medessence/production/{DROPPED}/new", {"smtp_password": "relay-pass-3"})
    # nothing stored there: the path is refused with its rule, as before
    for call in (secrets.get, secrets.describe, secrets.restore):
        with pytest.raises(InvalidRequest, match="not in the catalog"):
            call(f"medessence/production/{DROPPED}/never")
    with pytest.raises(InvalidRequest, match="not in the catalog"):
        secrets.parse(ORPHAN)  # the public parse stays strict
    assert secrets.describe(ORPHAN).current_version == 2  # nothing was written


def test_delete_restore_destroy_and_force_purge(reopened: SecretStore) -> None:
    secrets = reopened.secrets
    assert [v.destroyed for v in secrets.destroy(ORPHAN, 1).versions] == [True, False]
    assert secrets.delete(ORPHAN, recovery_days=7).purge_at is not None
    assert secrets.restore(ORPHAN).purge_at is None
    secrets.delete(ORPHAN, force=True)
    with pytest.raises(InvalidRequest, match="not in the catalog"):
        secrets.describe(ORPHAN)  # gone: its path is refused with the catalog's rule again
    assert reopened.storage.list(f"secrets/meta/medessence/production/{DROPPED}").keys == ()


def test_rewrap_finishes_for_every_other_category(reopened: SecretStore) -> None:
    reopened.keys.rotate("auth")
    report = reopened.secrets.rewrap()
    assert report.next_after is None
    assert (report.total, report.secrets, report.rewrapped) == (3, 2, 2)
    assert all(v.kek_version == 2 for v in reopened.secrets.versions(AUTH))
    assert [v.kek_version for v in reopened.secrets.versions(ORPHAN)] == [1, 1]  # passed over
    paged = reopened.secrets.rewrap(limit=1)  # pages still end
    assert paged.next_after == AUTH
    assert reopened.secrets.rewrap(after=AUTH).next_after is None


def test_the_sweeper_purges_past_a_dropped_category(
    reopened: SecretStore, clock: ManualClock
) -> None:
    secrets = reopened.secrets
    secrets.delete(ORPHAN, recovery_days=7)
    secrets.delete(LATER, recovery_days=7)
    clock.advance(days=8)
    assert Sweeper(reopened, interval=3600).sweep_once() == (ORPHAN, LATER)
    with pytest.raises(NotFoundError):
        secrets.describe(LATER)
    assert [m.path for m in secrets.list(include_deleted=True).items] == [AUTH]
    assert reopened.storage.list("secrets/data/").keys != ()  # AUTH's versions only
    assert len(reopened.storage.list("secrets/data/").keys) == 1


def test_one_failing_purge_never_keeps_the_others(
    reopened: SecretStore, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = reopened.secrets
    secrets.delete(ORPHAN, recovery_days=7)
    secrets.delete(LATER, recovery_days=7)
    clock.advance(days=8)
    real = secrets.purge

    def purge(path: str, **kw: object) -> bool:  # an injected failure on the first one
        if path == ORPHAN:
            raise OSError("injected: disk trouble")
        return real(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(secrets, "purge", purge)
    assert secrets.purge_expired() == [LATER]
    monkeypatch.undo()
    assert secrets.purge_expired() == [ORPHAN]  # the next pass tries it again


def test_its_secrets_stay_readable(reopened: SecretStore) -> None:
    """A data key is unwrapped by the provider that wrapped it, so reading needs no
    category in the catalog (reads stay under authorization like any other)."""
    assert reopened.secrets.get(ORPHAN).fields == {"smtp_password": "relay-pass-2"}
    assert reopened.secrets.get(ORPHAN, version=1).fields == {"smtp_password": "relay-pass-1"}
