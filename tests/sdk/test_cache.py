"""``SecretCache`` over a real secrets engine (SQLite store) with a ``ManualClock``.

The engine has the same ``get``/``describe`` shape as ``Client``; the cache over a
real server process is exercised in ``test_e2e.py``.
"""

from __future__ import annotations

import threading

import pytest

from medsecrets.clock import ManualClock
from medsecrets.errors import NotFoundError, ScheduledForDeletion, SealedError, StorageUnavailable
from medsecrets.schema.secrets import SecretMetadata, SecretVersion
from medsecrets.sdk import SecretCache
from medsecrets.sdk.cache import ERROR_RETRY
from medsecrets.sdk.errors import RequestTimedOut
from medsecrets.sensitive import SecretFields
from medsecrets.store import SecretStore

PATH = "medessence/test/database"


class Counting:
    """The real engine, with a count of the calls the cache makes (no behaviour changed)."""

    def __init__(self, store: SecretStore) -> None:
        self.store = store
        self.gets = 0
        self.describes = 0

    def get(self, path: str) -> SecretVersion:
        self.gets += 1
        return self.store.secrets.get(path)

    def describe(self, path: str) -> SecretMetadata:
        self.describes += 1
        return self.store.secrets.describe(path)


@pytest.fixture
def source(store: SecretStore) -> Counting:
    store.secrets.put(PATH, {"username": "canary_v1", "host": "db1"})
    return Counting(store)


def cache_for(source: Counting, clock: ManualClock, **kw: object) -> SecretCache:
    options: dict[str, object] = {"ttl": 100.0, "refresh_ahead": 0.8, "jitter": 0.1}
    options.update(kw)
    return SecretCache(source, clock=clock, background=False, **options)  # type: ignore[arg-type]


def test_a_miss_reads_once_then_hits_serve_from_memory(
    source: Counting, clock: ManualClock
) -> None:
    cache = cache_for(source, clock)
    assert cache.get(PATH, "username") == "canary_v1"
    for _ in range(100):
        assert cache.get(PATH)["host"] == "db1"
    clock.advance(71.9)  # below the earliest refresh point (80 * 0.9 = 72)
    assert cache.get(PATH, "host") == "db1"
    assert (source.gets, source.describes) == (1, 0)


def test_sees_a_new_version_within_its_refresh_interval(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = cache_for(source, clock)
    assert cache.get(PATH, "username") == "canary_v1"
    store.secrets.put(PATH, {"username": "canary_v2", "host": "db2"})
    clock.advance(88.01)  # past the latest refresh point (80 * 1.1 = 88), before ttl
    assert cache.get(PATH, "username") == "canary_v2"
    assert cache.get(PATH)["host"] == "db2"
    assert source.gets == 2


def test_background_refresh_ahead_serves_the_old_value_meanwhile(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = SecretCache(source, ttl=100.0, clock=clock, jitter=0.0)
    assert cache.get(PATH, "username") == "canary_v1"
    store.secrets.put(PATH, {"username": "canary_v2"})
    clock.advance(81)
    first = cache.get(PATH, "username")  # served at once; a refresh starts in the background
    cache.wait_for_refreshes(timeout=30)
    assert first in ("canary_v1", "canary_v2")
    assert cache.get(PATH, "username") == "canary_v2"
    assert source.gets == 2


def test_unchanged_version_is_kept_and_its_age_reset_without_reading_it(
    source: Counting, clock: ManualClock
) -> None:
    cache = cache_for(source, clock)
    cache.get(PATH)
    for _ in range(3):
        clock.advance(95)  # past the refresh point each time
        assert cache.get(PATH, "username") == "canary_v1"
    assert source.gets == 1
    assert source.describes == 3
    clock.advance(50)  # the age was reset by the last describe: still fresh
    cache.get(PATH)
    assert source.describes == 3


def test_returns_copies(source: Counting, clock: ManualClock) -> None:
    cache = cache_for(source, clock)
    one, two = cache.get(PATH), cache.get(PATH)
    assert isinstance(one, SecretFields)
    assert one is not two
    plain = one.to_dict()
    plain["username"] = "mutated"
    plain["extra"] = "x"
    assert cache.get(PATH).to_dict() == {"username": "canary_v1", "host": "db1"}
    assert "canary" not in repr(one)
    assert "canary" not in repr(cache)


def test_jitter_spreads_refresh_points_within_bounds(source: Counting, clock: ManualClock) -> None:
    early = cache_for(source, clock, random=lambda: 0.0)  # refresh point 72
    late = cache_for(source, clock, random=lambda: 0.9999)  # refresh point ~88
    early.get(PATH)
    late.get(PATH)
    clock.advance(75)
    early.get(PATH)
    late.get(PATH)
    assert source.describes == 1  # only the early one refreshed


def test_stale_values_are_off_by_default(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = cache_for(source, clock)
    cache.get(PATH)
    store.seal()
    clock.advance(85)  # in the refresh window: the value is not stale yet
    assert cache.get(PATH, "username") == "canary_v1"
    clock.advance(20)  # past ttl
    with pytest.raises(SealedError):
        cache.get(PATH)


def test_stale_serving_is_bounded_by_max_stale(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = cache_for(source, clock, serve_stale_on_error=True, max_stale=1000.0)
    cache.get(PATH)
    store.seal()
    clock.advance(500)
    assert cache.get(PATH, "username") == "canary_v1"
    asked = source.describes
    for _ in range(50):  # the server is asked again at most every ERROR_RETRY seconds
        cache.get(PATH)
    assert source.describes == asked
    clock.advance(ERROR_RETRY)
    cache.get(PATH)
    assert source.describes == asked + 1
    clock.advance(1000 - 500 - ERROR_RETRY + 0.5)  # age now above max_stale
    with pytest.raises(SealedError):
        cache.get(PATH)
    store.auto_unseal()
    assert cache.get(PATH, "username") == "canary_v1"  # back once the server is


@pytest.mark.parametrize(
    "outage",
    [
        StorageUnavailable("postgres get failed: no connection in time, nothing was sent"),
        RequestTimedOut("request timed out"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_passing_outage_serves_the_stale_value_when_asked_to(
    source: Counting, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, outage: Exception
) -> None:
    """A database out of reach or a server too busy for now is an outage like a sealed
    server: with ``serve_stale_on_error`` the cached value is served (it dropped the entry
    and raised, as for a secret gone for good)."""
    cache = cache_for(source, clock, serve_stale_on_error=True, max_stale=1000.0)
    cache.get(PATH)

    def down(path: str) -> SecretMetadata:
        raise outage

    monkeypatch.setattr(source, "describe", down)
    monkeypatch.setattr(source, "get", down)
    clock.advance(500)
    assert cache.get(PATH, "username") == "canary_v1"
    assert len(cache) == 1


def test_fails_closed_when_the_secret_goes_away(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = cache_for(source, clock, serve_stale_on_error=True)
    cache.get(PATH)
    store.secrets.delete(PATH, recovery_days=7)
    clock.advance(95)
    with pytest.raises(ScheduledForDeletion):
        cache.get(PATH)
    assert len(cache) == 0
    store.secrets.restore(PATH)
    cache.get(PATH)
    store.secrets.delete(PATH, force=True)
    with pytest.raises(NotFoundError):
        cache.refresh_now()
    assert len(cache) == 0
    with pytest.raises(NotFoundError):
        cache.get(PATH)


def test_refresh_now_and_invalidate(
    source: Counting, clock: ManualClock, store: SecretStore
) -> None:
    cache = cache_for(source, clock)
    cache.get(PATH)
    store.secrets.put(PATH, {"username": "canary_v2"})
    cache.refresh_now(PATH)
    assert cache.get(PATH, "username") == "canary_v2"
    store.secrets.put(PATH, {"username": "canary_v3"})
    cache.refresh_now()
    assert cache.get(PATH, "username") == "canary_v3"
    with pytest.raises(NotFoundError):
        cache.get(PATH, "no_such_field")
    cache.invalidate(PATH)
    assert len(cache) == 0
    with pytest.raises(NotFoundError):
        cache.refresh_now("medessence/test/external-services")


def test_bad_settings_are_refused(source: Counting) -> None:
    nan, inf = float("nan"), float("inf")
    for bad in (
        {"ttl": 0}, {"refresh_ahead": 1.5}, {"jitter": 1.0}, {"max_stale": -1},
        {"ttl": nan}, {"ttl": inf}, {"max_stale": nan}, {"refresh_ahead": nan}, {"jitter": nan},
    ):  # fmt: skip
        with pytest.raises(ValueError):
            SecretCache(source, **bad)  # type: ignore[arg-type]


class Gated(Counting):
    """``Counting`` whose ``get`` reads, then waits for ``go`` before it answers."""

    def __init__(self, store: SecretStore) -> None:
        super().__init__(store)
        self.entered = threading.Event()
        self.go = threading.Event()

    def get(self, path: str) -> SecretVersion:
        secret = super().get(path)
        self.entered.set()
        self.go.wait(30)
        return secret


def test_invalidate_forgets_what_a_refresh_under_way_read(
    store: SecretStore, clock: ManualClock
) -> None:
    """A refresh that had read before the change stored its value after the ``invalidate``
    meant to drop it (the one that follows a write through the cache's own client)."""
    store.secrets.put(PATH, {"username": "canary_v1"})
    source = Gated(store)
    cache = cache_for(source, clock)
    reader = threading.Thread(target=cache.get, args=(PATH,))
    reader.start()
    assert source.entered.wait(30)  # it has read canary_v1 and not yet answered
    store.secrets.put(PATH, {"username": "canary_v2"})
    forget = threading.Thread(target=cache.invalidate, args=(PATH,))
    forget.start()
    forget.join(0.2)  # (waits for the refresh; passes whether or not it got this far)
    source.go.set()
    reader.join(30)
    forget.join(30)
    assert len(cache) == 0
    assert cache.get(PATH, "username") == "canary_v2"
