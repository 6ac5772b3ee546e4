"""Every SDK method against a real server process over HTTP (``ServerProcess``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import inspect
import weakref
from pathlib import Path

import pytest

from medsecrets.clock import ManualClock
from medsecrets.errors import (
    AlreadyInitializedError,
    AuthenticationError,
    CasConflictError,
    InvalidRequest,
    InvalidShareError,
    NotFoundError,
    PermissionDenied,
    ScheduledForDeletion,
    SealedError,
    ValidationError,
)
from medsecrets.schema.seal import ShamirSealConfig
from medsecrets.sdk import AsyncClient, Client, SecretCache, ServerUnavailableError
from medsecrets.sensitive import SecretFields, Sensitive
from medsecrets.testing.serverproc import ServerProcess, free_port, write_test_certificates

CANARY = "canary_e2e_9f3b"


def db(name: str) -> str:
    return f"medessence/test/database/{name}"


# -- system ------------------------------------------------------------------------
def test_health_and_seal_status(client: Client) -> None:
    health = client.health()
    assert health.initialized and not health.sealed
    status = client.seal_status()
    assert status.initialized and not status.sealed
    assert status.seal_type == "keyfile"


def test_keyring_and_kek_rotation_and_rewrap(client: Client) -> None:
    before = client.rotate()
    after = client.rotate()
    assert after.term == before.term + 1
    client.put(db("rewrap"), {"username": "rewrap_user"})
    versions = client.key_versions("database")
    assert versions and versions[0].category == "database"
    new = client.rotate_key("database")
    assert new == versions[-1].version + 1
    assert [v.version for v in client.key_versions("database")][-1] == new
    after_key = ""
    seen = rewrapped = 0
    for _ in range(1000):
        step = client.rewrap_step(after=after_key, limit=2)
        seen += step.secrets
        rewrapped += step.rewrapped
        if step.next_after is None:
            break
        after_key = step.next_after
    assert seen >= 1 and rewrapped >= 1
    assert client.get(db("rewrap")).fields["username"] == "rewrap_user"
    with pytest.raises(NotFoundError):
        client.key_versions("no-such-category")


# -- secrets -----------------------------------------------------------------------
def test_put_get_describe_versions_and_stages(client: Client) -> None:
    path = db("stages")
    v1 = client.put(path, {"username": "user_one", "host": "db1"}, description="primary")
    assert v1.number == 1 and "current" in v1.stages
    v2 = client.put(path, {"username": "user_two"}, stage="pending", cas=1)
    current = client.get(path)
    assert isinstance(current.fields, SecretFields)
    assert current.fields.to_dict() == {"username": "user_one", "host": "db1"}
    assert client.get(path, stage="pending").fields["username"] == "user_two"
    assert client.get(path, version=2).id == v2.id
    assert client.get(path, version_id=v1.id).number == 1
    meta = client.describe(path)
    assert meta.description == "primary" and meta.current_version == 1
    assert [v.number for v in client.versions(path)] == [1, 2]
    meta = client.promote(path, 2)
    assert meta.current_version == 2
    assert "previous" in client.versions(path)[0].stages
    meta = client.move_stage(path, "pending", 1)
    assert "pending" in meta.versions[0].stages
    meta = client.remove_stage(path, "pending")
    assert all("pending" not in v.stages for v in meta.versions)
    with pytest.raises(CasConflictError):
        client.put(path, {"username": "late"}, cas=1)


def test_update_metadata_list_and_iter_list(client: Client) -> None:
    for i in range(5):
        client.put(db(f"list-{i}"), {"username": f"user_{i}"}, tags={"team": "sdk"})
    meta = client.update_metadata(
        db("list-0"), description="d", owner="ml-team", tags={"team": "sdk", "x": "y"},
        rotation_days=30,
    )  # fmt: skip
    assert (meta.owner, meta.rotation.interval_days, meta.rotation.overridden) == (
        "ml-team", 30, True,
    )  # fmt: skip
    meta = client.update_metadata(db("list-0"), clear_rotation_override=True)
    assert not meta.rotation.overridden
    page = client.list("medessence/test/database/", tags={"team": "sdk"}, limit=2)
    assert len(page.items) == 2 and page.next_after is not None
    paths = [m.path for m in client.iter_list("medessence/test/", tags={"team": "sdk"}, limit=2)]
    assert paths == sorted(paths)
    assert {db(f"list-{i}") for i in range(5)} <= set(paths)
    narrowed = list(client.iter_list(environment="test", tags={"x": "y"}))
    assert [m.path for m in narrowed] == [db("list-0")]


def test_delete_restore_destroy_validate(client: Client) -> None:
    path = db("lifecycle")
    client.put(path, {"username": "first_user"})
    client.put(path, {"username": "second_user"})
    meta = client.destroy(path, 1)
    assert meta.versions[0].destroyed
    with pytest.raises(NotFoundError):
        client.get(path, version=1)
    meta = client.delete(path, recovery_days=7)
    assert meta.purge_at is not None
    with pytest.raises(ScheduledForDeletion) as info:
        client.get(path)
    assert info.value.path == path and info.value.purge_at.year >= 2026
    assert client.restore(path).purge_at is None
    report = client.validate(path)  # a partial value: the catalog wants every field
    assert report.path == path and not report.valid
    assert ("password", "required: missing") in [(p.field, p.rule) for p in report.problems]
    assert client.validate("medessence/development/database").valid  # provisioned in dev mode
    client.delete(path, force=True)
    with pytest.raises(NotFoundError):
        client.describe(path)


def test_error_mapping_against_the_server(client: Client, server: ServerProcess) -> None:
    with pytest.raises(NotFoundError):
        client.get(db("never-written"))
    client.put(db("exists"), {"username": "u"})
    with pytest.raises(CasConflictError):
        client.put(db("exists"), {"username": "u"}, cas=0)
    with pytest.raises(ValidationError) as invalid:
        client.put(db("bad-port"), {"port": f"{CANARY}"})
    assert invalid.value.field == "port"
    assert CANARY not in str(invalid.value)
    with pytest.raises(InvalidRequest):
        client.put("not-a-valid-path", {"username": "u"})
    with Client(server.addr, "ms.garbage-token", env={}) as stranger:
        with pytest.raises(AuthenticationError):
            stranger.get(db("exists"))
        assert stranger.health().initialized  # open route: no token needed


# -- catalog, generate, provision ------------------------------------------------------
def test_catalog_generate_and_provision(client: Client) -> None:
    catalog = client.catalog()
    assert catalog.prefix == "medessence"
    assert "database" in [c.name for c in catalog.categories]
    category = client.category("database")
    assert category.name == "database"
    assert any(f.name == "password" for f in category.fields)
    with pytest.raises(NotFoundError):
        client.category("no-such-category")
    value = client.generate("password", length=32)
    assert isinstance(value, Sensitive) and len(value.reveal()) == 32
    assert value.reveal() not in repr(value)
    report = client.provision("local")
    assert report.environment == "local" and report.development
    assert {item.status for item in report.items} == {"created"}
    again = client.provision("local", categories=["database"])
    assert [item.status for item in again.items] == ["exists"]


# -- tokens ------------------------------------------------------------------------
def test_tokens_create_lookup_revoke_and_policy(client: Client, server: ServerProcess) -> None:
    client.put(db("policy"), {"username": "policy_user"})
    created = client.token_create(
        paths=["medessence/test/"], capabilities=["read"], ttl=600, display_name="reader"
    )
    assert created.token.reveal() not in repr(created)
    me = client.token_lookup_self()
    assert me.root
    info = client.token_lookup(accessor=created.info.accessor)
    assert info.display_name == "reader" and info.capabilities == ("read",)
    assert client.token_lookup(token=created.token).accessor == created.info.accessor
    with Client(server.addr, created.token, env={}) as reader:
        assert reader.get(db("policy")).fields["username"] == "policy_user"
        assert reader.token_lookup_self().accessor == created.info.accessor
        with pytest.raises(PermissionDenied):
            reader.put(db("policy"), {"username": "nope"})
        with pytest.raises(PermissionDenied):
            reader.get("medessence/development/database")
        client.token_revoke(accessor=created.info.accessor)
        with pytest.raises(AuthenticationError):
            reader.get(db("policy"))
    with pytest.raises(InvalidRequest):
        client.token_revoke()


# -- retries, failover, repr ---------------------------------------------------------
def test_audit_hash_devices_search_who_read_key_and_alerts(client: Client) -> None:
    path = db("audited")
    client.put(path, {"username": CANARY})
    client.get(path)
    digest = client.audit_hash(CANARY)
    assert digest.device == "file" and digest.hash.startswith("hmac-sha256:")
    assert client.audit_hash(Sensitive(CANARY), device="file") == digest
    assert client.audit_hash(CANARY + "x").hash != digest.hash
    [device] = client.audit_devices()
    assert device.name == "file" and device.up and device.records > 0
    found = client.audit_search(operation="secrets.write", kind="request", path_prefix=path)
    [record] = found.records
    data = record["data"]
    assert isinstance(data, dict) and data["fields"] == {"username": digest.hash}
    reads = client.audit_who_read(path, since=dt.datetime(2000, 1, 1))
    assert [(r.principal, r.path) for r in reads.reads] == [("dev-root", path)]
    tomorrow = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert client.audit_who_read(path, since=tomorrow).reads == ()
    assert client.audit_search(path_prefix=path, since=tomorrow).records == ()
    limited = client.audit_search(path_prefix=path, limit=1)
    assert len(limited.records) == 1 and limited.truncated
    assert client.audit_public_key().public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert isinstance(client.alerts(limit=5), tuple)
    with pytest.raises(NotFoundError):
        client.audit_hash("value", device="no-such-device")
    with pytest.raises(InvalidRequest):
        client.audit_search(limit=0)


def test_failover_from_a_closed_port_to_the_server(server: ServerProcess) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sleeps: list[float] = []
    with Client([dead, server.addr], server.token, env={}, sleep=sleeps.append) as c:
        assert c.health().initialized
        assert c.address == server.addr
        c.put(db("failover"), {"username": "after_failover"})
        assert c.get(db("failover")).fields["username"] == "after_failover"
    assert sleeps == []
    with (
        Client([dead], server.token, env={}, retries=1, sleep=sleeps.append) as c,
        pytest.raises(ServerUnavailableError),
    ):
        c.health()
    assert len(sleeps) == 1


def test_repr_never_shows_the_token_or_values(client: Client, server: ServerProcess) -> None:
    assert server.token is not None
    client.put(db("repr"), {"username": CANARY})
    secret = client.get(db("repr"))
    for text in (repr(client), str(client), repr(secret), str(secret), repr(secret.fields)):
        assert server.token not in text
        assert CANARY not in text
    assert secret.fields["username"] == CANARY


def test_a_percent_in_a_path_is_refused_not_decoded_into_another_secret(
    client: Client, server: ServerProcess
) -> None:
    """A server decoding the path once more (before d2d5888) read ``a/b`` for ``a%2Fb``;
    no path holds a ``%``, so the client refuses one whatever the server."""
    client.put(db("pct"), {"username": CANARY})
    reader = AsyncClient(server.addr, server.token, env={})
    for path in ("medessence/test/database%2Fpct", "medessence%2Ftest%2Fdatabase%2Fpct"):
        with pytest.raises(InvalidRequest, match="'%'"):
            client.get(path)
        with pytest.raises(InvalidRequest, match="'%'"):
            asyncio.run(reader.describe(path))
    with pytest.raises(InvalidRequest, match="'%'"):
        client.put("medessence/test/database%2Fpct", {"username": "overwritten"})
    assert client.get(db("pct")).fields["username"] == CANARY


def test_text_that_is_not_unicode_is_refused_in_paths_and_queries(client: Client) -> None:
    """A lone surrogate escaped as a bare ``UnicodeEncodeError`` from ``quote``/httpx."""
    for call in (
        lambda: client.get("medessence/test/\udc80"),
        lambda: client.category("\udc80"),
        lambda: client.get(db("x"), version_id="\udc80"),
        lambda: client.list("\udc80"),
        lambda: client.audit_who_read("medessence/\udc80"),
    ):
        with pytest.raises(InvalidRequest, match="valid Unicode"):
            call()


# -- the cache over HTTP -------------------------------------------------------------
def test_cache_sees_a_new_version_within_its_refresh_interval(
    client: Client, server: ServerProcess
) -> None:
    path = db("cached")
    client.put(path, {"username": "cached_v1"})
    clock = ManualClock()
    cache = SecretCache(client, ttl=60.0, refresh_ahead=0.5, jitter=0.1, clock=clock)
    assert cache.get(path, "username") == "cached_v1"
    with Client(server.addr, server.token, env={}) as elsewhere:  # a write the cache cannot see
        elsewhere.put(path, {"username": "cached_v2"})
    clock.advance(20)
    assert cache.get(path, "username") == "cached_v1"  # fresh: served from memory
    clock.advance(13.01)  # past the latest refresh point (30 * 1.1 = 33)
    cache.get(path)  # starts the background refresh
    cache.wait_for_refreshes(timeout=30)
    assert cache.get(path, "username") == "cached_v2"


def test_cache_reads_its_own_clients_writes_at_once(client: Client) -> None:
    """The cache served the value it held until its refresh point (4 minutes by default)
    after a ``put``, ``delete`` or stage move through the very client it reads with."""
    path = db("cached-own")
    client.put(path, {"username": "own_v1"})
    cache = SecretCache(client, ttl=300.0, clock=ManualClock())
    assert cache.get(path, "username") == "own_v1"
    client.put(path, {"username": "own_v2"})
    assert cache.get(path, "username") == "own_v2"
    client.promote(path, 1)
    assert cache.get(path, "username") == "own_v1"
    with pytest.raises(InvalidRequest):  # refused by the server: the entry is read again
        client.delete(path, recovery_days=1)
    assert cache.get(path, "username") == "own_v1"
    client.delete(path)
    with pytest.raises(ScheduledForDeletion):
        cache.get(path)
    client.restore(path)
    assert cache.get(path, "username") == "own_v1"
    dropped = weakref.ref(cache)
    del cache
    gc.collect()
    assert dropped() is None  # the client does not keep its listeners alive
    client.put(path, {"username": "own_v3"})


def test_cache_with_a_read_only_token_falls_back_to_reading(
    client: Client, server: ServerProcess
) -> None:
    path = db("cached-ro")
    client.put(path, {"username": "ro_v1"})
    token = client.token_create(paths=[path], capabilities=["read"], ttl=600).token
    clock = ManualClock()
    with Client(server.addr, token, env={}) as reader:
        cache = SecretCache(reader, ttl=10.0, clock=clock, background=False)
        assert cache.get(path, "username") == "ro_v1"
        client.put(path, {"username": "ro_v2"})
        clock.advance(9.5)
        assert cache.get(path, "username") == "ro_v2"  # describe denied: read again


# -- sealing, init, unseal, rekey (a non-dev server of its own) -----------------------
def test_init_unseal_seal_rekey_and_retry_on_503(shamir_server: ServerProcess) -> None:
    addr = shamir_server.addr
    with Client(addr, env={}, retries=0) as anonymous:
        status = anonymous.seal_status()
        assert not status.initialized
        result = anonymous.init(ShamirSealConfig(shares=3, threshold=2))
        assert len(result.shares) == 3 and result.threshold == 2
        assert result.root_token.reveal() not in repr(result)
        with pytest.raises(AlreadyInitializedError):
            anonymous.init(ShamirSealConfig(shares=3, threshold=2))
        shares = [s.reveal() for s in result.shares]
        status = anonymous.seal_status()
        if not status.sealed:  # initialisation may leave the server unsealed
            with Client(addr, result.root_token, env={}) as root:
                assert root.seal().sealed
        with pytest.raises(InvalidShareError):
            anonymous.unseal("not a share")
        assert anonymous.unseal(shares[0]).progress == 1
        assert anonymous.unseal_reset().progress == 0
        anonymous.unseal(shares[0])
        assert not anonymous.unseal(shares[1]).sealed

    root_token = result.root_token
    with Client(addr, root_token, env={}, retries=0) as root:
        root.put(db("sealed"), {"username": "sealed_user"})
        dropped = root.rekey(shares[:2], new_shares=2, new_threshold=2)
        assert dropped.verify is True and root.rekey_cancel() is True
        assert root.rekey_cancel() is False
        with pytest.raises(InvalidRequest, match="no rekey is pending"):
            root.rekey_verify(dropped.shares)
        new = root.rekey(shares[:2], new_shares=2, new_threshold=2)
        assert len(new.shares) == 2
        with pytest.raises(InvalidShareError):
            root.rekey_verify(shares[:2])  # the current shares are not the new ones
        assert root.rekey_verify(new.shares).threshold == 2
        assert root.seal().sealed
        with pytest.raises(SealedError):
            root.get(db("sealed"))

    unsealed: list[float] = []

    def unseal_while_waiting(delay: float) -> None:
        unsealed.append(delay)
        with Client(addr, env={}) as operator:
            for share in new.shares:
                operator.unseal(share)

    with Client(addr, root_token, env={}, retries=3, sleep=unseal_while_waiting) as patient:
        assert patient.get(db("sealed")).fields["username"] == "sealed_user"
    assert len(unsealed) == 1  # one 503, one wait, then success


# -- async parity ------------------------------------------------------------------
def test_async_client_has_the_same_methods_and_signatures() -> None:
    def api(cls: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_") and name not in ("close", "aclose")
        }

    sync, asynchronous = api(Client), api(AsyncClient)
    assert set(sync) == set(asynchronous)
    for name, signature in sync.items():
        assert list(signature.parameters) == list(asynchronous[name].parameters), name
        if name not in ("call", "iter_list", "set_token", "on_secret_change"):
            assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_async_client_against_the_server(client: Client, server: ServerProcess) -> None:
    path = db("async")
    client.put(path, {"username": "async_v1"})

    async def main() -> None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with AsyncClient([dead, server.addr], server.token, env={}) as ac:
            assert (await ac.health()).initialized
            assert ac.address == server.addr
            version = await ac.put(path, {"username": "async_v2"}, cas=1)
            secret = await ac.get(path)
            assert secret.id == version.id and secret.fields["username"] == "async_v2"
            assert (await ac.describe(path)).current_version == 2
            items = [m.path async for m in ac.iter_list("medessence/test/database/", limit=1)]
            assert path in items
            assert (await ac.token_lookup_self()).root
            assert "database" in [c.name for c in (await ac.catalog()).categories]
            assert (await ac.audit_devices())[0].up
            assert (await ac.audit_who_read(path)).reads[-1].path == path
            with pytest.raises(NotFoundError):
                await ac.get(db("async-missing"))
            assert server.token not in repr(ac)

    asyncio.run(main())
    assert client.get(path).fields["username"] == "async_v2"


# -- TLS -----------------------------------------------------------------------------
def test_tls_with_a_test_ca(tmp_path: Path) -> None:
    certs = write_test_certificates(tmp_path / "tls")
    with ServerProcess(
        tmp_path / "data", extra_args=certs.server_args(), ca_file=certs.ca_file,
        log_dir=tmp_path / "logs",
    ) as server:  # fmt: skip
        assert server.addr.startswith("https://")
        with Client(server.addr, server.token, cacert=certs.ca_file, env={}) as c:
            assert c.token_lookup_self().root
        env = {"MEDSECRETS_ADDR": server.addr, "MEDSECRETS_CACERT": certs.ca_file}
        with Client(token=server.token, env=env) as c:
            assert c.health().initialized
        sleeps: list[float] = []
        with (
            Client(server.addr, server.token, env={}, sleep=sleeps.append) as untrusting,
            pytest.raises(ServerUnavailableError, match="TLS"),
        ):
            untrusting.health()
        assert sleeps == []  # a certificate problem is not retried
        with Client(server.addr, server.token, verify=False, env={}) as insecure:
            assert insecure.health().initialized

        async def main() -> None:  # the async client's own transport speaks TLS too
            async with AsyncClient(server.addr, server.token, cacert=certs.ca_file, env={}) as ac:
                assert (await ac.token_lookup_self()).root
            async with AsyncClient(server.addr, server.token, env={}) as untrusting:
                with pytest.raises(ServerUnavailableError, match="TLS"):
                    await untrusting.health()

        asyncio.run(main())


def test_cache_serves_stale_values_bounded_while_the_server_is_down(tmp_path: Path) -> None:
    clock = ManualClock()
    with ServerProcess(tmp_path / "data", log_dir=tmp_path / "logs") as server:
        client = Client(server.addr, server.token, env={}, retries=0)
        client.put(db("outage"), {"username": "outage_user"})
        strict = SecretCache(client, ttl=60.0, clock=clock, background=False)
        lenient = SecretCache(
            client, ttl=60.0, clock=clock, background=False, serve_stale_on_error=True,
            max_stale=600.0,
        )  # fmt: skip
        for cache in (strict, lenient):
            assert cache.get(db("outage"), "username") == "outage_user"
        server.stop()
        clock.advance(120)  # both values expired; the server is gone
        with pytest.raises(ServerUnavailableError):
            strict.get(db("outage"))
        assert lenient.get(db("outage"), "username") == "outage_user"
        clock.advance(481)  # older than max_stale now
        with pytest.raises(ServerUnavailableError):
            lenient.get(db("outage"))
        server.start()
        assert lenient.get(db("outage"), "username") == "outage_user"
        client.close()
