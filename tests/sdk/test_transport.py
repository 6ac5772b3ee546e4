"""Retry, backoff and failover mechanics of both clients, with ``httpx.MockTransport``.

The mock stands in for the network only (a refused connection, a 503); the
end-to-end behaviour against a real server process is in ``test_e2e.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path

import httpcore
import httpx
import pytest

from medsecrets.errors import AuthenticationError, InvalidRequest, SealedError
from medsecrets.sdk import AsyncClient, Client, ServerUnavailableError, UnexpectedResponseError
from medsecrets.sdk import endpoints as ep
from medsecrets.sdk.errors import RequestTimedOut
from medsecrets.sdk.transport import RetryPolicy, attempt_deadline, bounded

SECRET = {
    "path": "medessence/development/database",
    "number": 1,
    "id": "v1",
    "created_at": "2026-01-01T00:00:00+00:00",
    "stages": ["current"],
    "fields": {"password": "canary-value-123"},
}
SEALED = {"error": {"code": "sealed", "message": "the store is sealed"}}
A, B = "http://a.test:8200", "http://b.test:8200"


class Script:
    """A scripted network: each request takes the next outcome (a status or an exception)."""

    def __init__(self, outcomes: list[object]) -> None:
        self.outcomes = outcomes
        self.hosts: list[str] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        self.requests.append(request)
        outcome = self.outcomes.pop(0) if self.outcomes else 200
        if isinstance(outcome, Callable):  # type: ignore[arg-type]
            outcome = outcome(request)
        if isinstance(outcome, Exception):
            raise outcome
        if outcome == 200:
            return httpx.Response(200, json=SECRET)
        if outcome == 503:
            return httpx.Response(503, json=SEALED)
        assert isinstance(outcome, httpx.Response)
        return outcome


def refuse(request: httpx.Request) -> Exception:
    return httpx.ConnectError("connection refused", request=request)


def down_host(host: str) -> Callable[[httpx.Request], object]:
    def outcome(request: httpx.Request) -> object:
        return refuse(request) if request.url.host == host else 200

    return outcome


def make(script: Script, addr: object = A, **kw: object) -> tuple[Client, list[float]]:
    sleeps: list[float] = []
    client = Client(
        addr,  # type: ignore[arg-type]
        "ms.secret-token-xyz",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        random=lambda: 0.0,
        env={},
        **kw,  # type: ignore[arg-type]
    )
    return client, sleeps


def test_503_is_retried_with_growing_backoff_then_succeeds() -> None:
    script = Script([503, 503, 200])
    client, sleeps = make(script, retries=3, backoff=0.1, backoff_max=2.0)
    secret = client.get("medessence/development/database")
    assert secret.fields["password"] == "canary-value-123"
    assert sleeps == [0.05, 0.1]  # equal jitter with random() == 0: half the capped delay
    assert len(script.requests) == 3


def test_503_gives_up_after_retries_with_the_mapped_error() -> None:
    script = Script([503] * 10)
    client, sleeps = make(script, retries=2)
    with pytest.raises(SealedError):
        client.get("medessence/development/database")
    assert len(script.requests) == 3
    assert len(sleeps) == 2


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(retries=10, backoff=0.1, backoff_max=1.0)
    assert policy.delay(0, 0.0) == pytest.approx(0.05)
    assert policy.delay(0, 0.999) == pytest.approx(0.1, rel=1e-3)
    assert policy.delay(3, 0.0) == pytest.approx(0.4)
    assert all(policy.delay(n, 0.999) <= 1.0 for n in range(100))
    assert policy.delay(50, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_unsafe_post_is_not_retried_on_503() -> None:
    script = Script([503, 200])
    client, sleeps = make(script)
    with pytest.raises(SealedError):
        client.token_create(paths=["medessence/"], capabilities=["read"], ttl=60)
    assert len(script.requests) == 1
    assert sleeps == []


def test_error_after_sending_is_retried_only_when_safe() -> None:
    def read_error(request: httpx.Request) -> Exception:
        return httpx.ReadError("connection reset", request=request)

    script = Script([read_error, 200])
    client, sleeps = make(script)
    assert client.get("medessence/development/database").number == 1
    assert len(sleeps) == 1

    script = Script([read_error, 200])
    client, sleeps = make(script)
    with pytest.raises(ServerUnavailableError):
        client.rotate()
    assert len(script.requests) == 1


def test_unsent_request_is_retried_even_when_unsafe() -> None:
    script = Script([refuse, httpx.Response(200, json={"revoked": True})])
    client, _ = make(script, retries=1)
    client.token_revoke(accessor="abc")
    assert len(script.requests) == 2
    script = Script([refuse, httpx.Response(409, json={"error": {"code": "conflict"}})])
    client, _ = make(script, retries=1)
    with pytest.raises(Exception, match="409"):
        client.restore("medessence/development/database")


def test_failover_to_the_second_address_and_stick_to_it() -> None:
    script = Script([down_host("a.test")] * 10)
    client, sleeps = make(script, addr=[A, B])
    assert client.get("medessence/development/database").id == "v1"
    assert script.hosts == ["a.test", "b.test"]
    assert sleeps == []  # failover to an untried address needs no wait
    assert client.address == B
    client.get("medessence/development/database")
    assert script.hosts[-1] == "b.test"
    assert len(script.hosts) == 3


def test_every_address_down_raises_server_unavailable_after_retries() -> None:
    script = Script([refuse] * 100)
    client, sleeps = make(script, addr=f"{A}, {B}", retries=2)
    with pytest.raises(ServerUnavailableError) as info:
        client.get("medessence/development/database")
    assert script.hosts == ["a.test", "b.test"] * 3
    assert len(sleeps) == 2
    assert "ms.secret" not in str(info.value)


def test_token_header_only_where_needed_and_never_in_repr() -> None:
    script = Script([httpx.Response(200, json={
        "initialized": True, "sealed": False, "version": "0.1.0",
        "server_time": "2026-01-01T00:00:00+00:00",
    }), 200])  # fmt: skip
    client, _ = make(script)
    assert client.health().initialized
    client.get("medessence/development/database")
    health_req, get_req = script.requests
    assert "authorization" not in health_req.headers
    assert get_req.headers["authorization"] == "Bearer ms.secret-token-xyz"
    assert "ms.secret" not in repr(client)
    assert "ms.secret" not in repr(client.token)
    client.set_token(None)
    client.get("medessence/development/database")
    assert "authorization" not in script.requests[-1].headers


def test_settings_come_from_the_environment() -> None:
    env = {"MEDSECRETS_ADDR": f"{A},{B}/", "MEDSECRETS_TOKEN": "ms.from-env"}
    script = Script([200])
    client = Client(transport=httpx.MockTransport(script), env=env)
    assert client.addresses == (A, B)
    client.get("medessence/development/database")
    assert script.requests[0].headers["authorization"] == "Bearer ms.from-env"
    assert Client(env={}).addresses == ("http://127.0.0.1:8200",)
    with pytest.raises(ValueError):
        Client("ftp://x", env={})
    with pytest.raises(ValueError, match="cannot use the CA file"):
        Client(A, env={"MEDSECRETS_CACERT": "/nonexistent/ca.pem"})


def test_a_ca_file_that_is_not_a_regular_pem_file_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO as ``MEDSECRETS_CACERT`` made the client wait for ever for a writer."""
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"cannot use the CA file .*not a regular file"):
        Client(A, env={"MEDSECRETS_CACERT": str(fifo)})
    binary = tmp_path / "ca.der"
    binary.write_bytes(b"\x30\x82\xff\xfe")
    with pytest.raises(ValueError, match="not a PEM certificate bundle"):
        Client(A, cacert=str(binary), env={})
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    with pytest.raises(ValueError, match="cannot use the CA file"):
        Client(A, cacert=str(empty), env={})


def test_request_body_and_query_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"version": {
            "number": 2, "id": "v2", "created_at": "2026-01-01T00:00:00+00:00",
            "stages": ["current"], "destroyed": False, "kek_version": 1,
        }})  # fmt: skip

    client = Client(A, "t", transport=httpx.MockTransport(handler), env={})
    info = client.put("medessence/dev/database", {"password": "x"}, cas=1, tags={"team": "ml"})
    assert info.number == 2
    request = seen[0]
    assert request.method == "PUT"
    assert request.url.path == "/v1/secrets/medessence/dev/database"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "fields": {"password": "x"}, "stage": "current", "cas": 1, "tags": {"team": "ml"},
    }  # fmt: skip


def test_async_client_retries_and_fails_over_the_same_way() -> None:
    script = Script([down_host("a.test"), 503, 200])
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    async def main() -> None:
        async with AsyncClient(
            [A, B], "t", transport=httpx.MockTransport(script), sleep=fake_sleep,
            random=lambda: 0.0, env={},
        ) as client:  # fmt: skip
            secret = await client.get("medessence/development/database")
            assert secret.id == "v1"
            assert client.address == B

    asyncio.run(main())
    assert script.hosts == ["a.test", "b.test", "b.test"]
    assert sleeps == [0.05]


def test_async_client_maps_errors() -> None:
    async def main() -> None:
        handler = httpx.MockTransport(
            lambda r: httpx.Response(401, json={"error": {"code": "unauthenticated"}})
        )
        async with AsyncClient(A, "t", transport=handler, env={}) as client:
            with pytest.raises(AuthenticationError):
                await client.token_lookup_self()

    asyncio.run(main())


def test_an_unreadable_success_is_an_unexpected_response() -> None:
    for bad in (httpx.Response(200, content=b"<html>"), httpx.Response(200, json={"path": 1})):
        client, _ = make(Script([bad]))
        with pytest.raises(UnexpectedResponseError):
            client.get("medessence/development/database")


def test_transport_errors_are_not_chained_to_the_request_and_its_token() -> None:
    client, _ = make(Script([refuse] * 10), retries=0)
    with pytest.raises(ServerUnavailableError) as info:
        client.get("medessence/development/database")
    assert info.value.__cause__ is None and info.value.__context__ is None


# -- review findings: what is never sent, never retried, never leaked -------------------
def test_dot_segments_are_refused_before_anything_is_sent() -> None:
    """httpx resolves ``..``: ``restore("../sys/seal")`` reached ``/v1/sys/seal``."""
    script = Script([200] * 10)
    client, _ = make(script)
    for call in (
        lambda: client.restore("../sys/seal"),
        lambda: client.key_versions("../../secrets/x"),
        lambda: client.describe("medessence/./development/database"),
        lambda: client.get("medessence/development/database/.."),
    ):
        with pytest.raises(InvalidRequest, match=r"'\.' or '\.\.' segment"):
            call()
    assert script.requests == []


def test_a_write_whose_answer_was_lost_is_not_written_again() -> None:
    """A retried PUT added a second version; a retried DELETE reported its own deletion."""

    def lost(request: httpx.Request) -> Exception:
        return httpx.ReadError("connection reset after the request", request=request)

    for write in (
        lambda c: c.put("medessence/development/database", {"password": "x" * 20}),
        lambda c: c.delete("medessence/development/database"),
    ):
        script = Script([lost, 200, 200])
        client, sleeps = make(script)
        with pytest.raises(ServerUnavailableError):
            write(client)
        assert len(script.requests) == 1 and sleeps == []
        script = Script([refuse, lost])  # never sent: retried; then lost: not again
        client, _ = make(script, retries=3)
        with pytest.raises(ServerUnavailableError):
            write(client)
        assert len(script.requests) == 2


def test_a_server_timeout_is_its_own_error_and_a_write_is_not_retried() -> None:
    timeout = {"error": {"code": "timeout", "message": "the request timed out; outcome unknown"}}
    script = Script([httpx.Response(503, json=timeout)] * 5)
    client, _ = make(script)
    with pytest.raises(RequestTimedOut):
        client.put("medessence/development/database", {"password": "x" * 20})
    assert len(script.requests) == 1
    assert not issubclass(RequestTimedOut, SealedError)


def test_bad_settings_and_bodies_fail_before_sending_and_name_no_value() -> None:
    script = Script([200] * 10)
    for timeout in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            make(script, timeout=timeout)
    with pytest.raises(ValueError, match="cannot use the CA file"):
        Client(A, "t", cacert="/nonexistent/ca.pem", env={})
    client, _ = make(script)
    canary = "canary-value-\ud800-lone-surrogate"
    with pytest.raises(InvalidRequest) as caught:
        client.put("medessence/development/database", {"password": canary})
    assert "canary" not in str(caught.value) and caught.value.__context__ is None
    with pytest.raises(InvalidRequest, match="NaN or infinity"):
        client.token_create(paths=["medessence/"], capabilities=["read"], ttl=float("nan"))
    assert script.requests == []


@pytest.mark.parametrize(
    "addr",
    ["http://user:canary-pw@127.0.0.1:8200", "https://canary-pw@[::1", "http://u:canary-pw@h/x"],
)
def test_an_address_with_credentials_is_refused_without_echoing_them(addr: str) -> None:
    with pytest.raises(ValueError, match="must not hold a user name or password") as caught:
        Client(addr, "t", env={})
    assert "canary" not in str(caught.value)


def test_both_clients_tell_their_listeners_of_every_call_that_may_change_a_secret() -> None:
    """What lets ``SecretCache`` read its own client's writes: a write, also a failed one."""
    path = "medessence/development/database"

    def lost(request: httpx.Request) -> Exception:
        return httpx.ReadError("connection reset after the request", request=request)

    heard: list[str] = []
    client, _ = make(Script([200, lost, 200]), retries=0)
    client.on_secret_change(heard.append)
    client.get(path)
    with pytest.raises(ServerUnavailableError):
        client.put(path, {"password": "x" * 20})
    with pytest.raises(UnexpectedResponseError):  # the mock answers a secret, not metadata
        client.destroy(path, 1)
    assert heard == [path, path]

    async def main() -> list[str]:
        told: list[str] = []
        transport = httpx.MockTransport(Script([200, lost]))
        async with AsyncClient(A, "t", transport=transport, env={}, retries=0) as aclient:
            aclient.on_secret_change(told.append)
            await aclient.get(path)
            with pytest.raises(ServerUnavailableError):
                await aclient.delete(path)
        return told

    assert asyncio.run(main()) == [path]


def test_a_call_never_shows_its_body() -> None:
    """``repr(Call)`` showed secret values, shares and tokens (in tracebacks with locals)."""
    canary = "canary-value-31b"
    for call in (
        ep.put("medessence/development/database", {"password": canary}, cas=None,
               stage="current", description=None, owner=None, tags=None),
        ep.unseal(canary),
        ep.token_lookup(accessor=None, token=canary),
        ep.audit_hash(canary, device=None),
    ):  # fmt: skip
        assert canary not in repr(call)
        assert canary in json.dumps(call.body)


@pytest.mark.parametrize(
    "token", ["ms.canary\u00e9", "ms.canary\nX-Injected: 1", "ms.canary x", "ms.\udc80"]
)
def test_set_token_checks_the_token_as_the_constructor_does(token: str) -> None:
    """``set_token`` took anything: a bare ``UnicodeEncodeError`` at the next call, or a
    line break sent on into the request head."""
    script = Script([200])
    client, _ = make(script)
    with pytest.raises(ValueError, match="not printable ASCII") as caught:
        client.set_token(token)
    assert "canary" not in str(caught.value)
    client.get("medessence/development/database")  # the token before is kept
    assert script.requests[0].headers["authorization"] == "Bearer ms.secret-token-xyz"


def test_an_attempt_cuts_its_network_steps_to_what_is_left_of_its_budget() -> None:
    """``bounded``: what the clients' network streams ask before each connect, read and
    write (httpcore passes each the same per-operation timeout)."""
    assert bounded(7.0, httpcore.ReadTimeout) == 7.0  # no attempt under way: httpx's own
    with attempt_deadline(600.0):
        assert bounded(7.0, httpcore.ReadTimeout) == 7.0
        left = bounded(None, httpcore.ReadTimeout)
        assert left is not None and 0 < left <= 600.0
    with attempt_deadline(0.0) as spent, pytest.raises(httpcore.WriteTimeout):
        assert spent.expired
        bounded(7.0, httpcore.WriteTimeout)
    assert bounded(None, httpcore.ReadTimeout) is None  # the attempt's budget is gone with it


def test_an_empty_ca_file_is_refused_not_read_as_the_system_store(tmp_path: Path) -> None:
    """An empty ``MEDSECRETS_CACERT`` (a provisioning step that failed) was accepted, and
    ``cadata=""`` trusts the system store: every public CA, where one private CA was meant."""
    empty = tmp_path / "ca.pem"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot use the CA file .*not a PEM certificate bundle"):
        Client(A, cacert=str(empty), env={})
