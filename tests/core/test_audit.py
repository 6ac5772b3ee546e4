"""The audit seam: every request audited before anything leaves; a failing hook refuses."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

import pytest

from medsecrets.auth.tokens import TokenStore
from medsecrets.core import Core, Request
from medsecrets.errors import AuditFailure, AuthenticationError, NotFoundError, PermissionDenied
from medsecrets.schema.tokens import TokenInfo
from medsecrets.store import SecretStore

from .conftest import P


class Recorder:
    def __init__(self, fail_on: str | None = None) -> None:
        self.events: list[tuple[object, ...]] = []
        self.fail_on = fail_on

    def on_request(self, request: Request, principal: TokenInfo | None) -> None:
        self.events.append(("request", request.route, principal is not None))
        if self.fail_on == "request":
            raise OSError("disk full")

    def on_response(
        self,
        request: Request,
        principal: TokenInfo | None,
        status: int,
        code: str | None,
        version: int | None = None,
    ) -> None:
        self.events.append(("response", request.route, status, code))
        if self.fail_on == "response":
            raise OSError("disk full")


def test_success_and_errors_are_audited_in_order(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    audit = Recorder()
    core = Core(store, tokens, audit=audit)
    core.handle(Request(method="GET", route="sys.health"))
    with pytest.raises(AuthenticationError):
        core.handle(Request(method="GET", route="secrets.read", path=P, token="bad"))
    with pytest.raises(NotFoundError):
        core.handle(Request(method="GET", route="secrets.read", path=P, token=root))
    assert audit.events == [
        ("request", "sys.health", False),
        ("response", "sys.health", 200, None),
        ("request", "secrets.read", False),
        ("response", "secrets.read", 401, "unauthenticated"),
        ("request", "secrets.read", True),
        ("response", "secrets.read", 404, "not_found"),
    ]


def test_denied_request_is_audited_with_403(store: SecretStore, tokens: TokenStore) -> None:
    audit = Recorder()
    core = Core(store, tokens, audit=audit)
    token, _ = tokens.create(
        paths=["*"], capabilities=["list"], ttl=60, display_name="", parent=None
    )
    with pytest.raises(PermissionDenied):
        core.handle(Request(method="GET", route="secrets.read", path=P, token=token.reveal()))
    assert audit.events[-1] == ("response", "secrets.read", 403, "permission_denied")


@pytest.mark.parametrize("fail_on", ["request", "response"])
def test_failing_hook_refuses_the_request(
    store: SecretStore,
    tokens: TokenStore,
    root: str,
    call: Callable[..., object],
    fail_on: str,
) -> None:
    call("secrets.write", root, path=P, body={"fields": {"username": "a_user"}})
    core = Core(store, tokens, audit=Recorder(fail_on=fail_on))
    with pytest.raises(AuditFailure) as caught:
        core.handle(Request(method="GET", route="secrets.read", path=P, token=root))
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    # A failing on_request means the route never ran: no write happened.
    with pytest.raises(AuditFailure):
        core.handle(
            Request(
                method="PUT",
                route="secrets.write",
                path=P,
                token=root,
                body={"fields": {"username": "b_user"}},
            )
        )
    versions = store.secrets.versions(P)
    assert len(versions) == (1 if fail_on == "request" else 2)


def test_hook_failure_on_an_error_is_still_audit_failure(
    store: SecretStore, tokens: TokenStore
) -> None:
    core = Core(store, tokens, audit=Recorder(fail_on="response"))
    with pytest.raises(AuditFailure):
        core.handle(Request(method="GET", route="secrets.read", path=P, token="bad"))


class _Ticket:
    """A ticket whose record is durable (``ok``) or not."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def wait(self) -> None:
        if not self.ok:
            raise AuditFailure

    async def wait_async(self) -> None:
        self.wait()


class TicketRecorder(Recorder):
    """Records like ``Recorder``; hands out tickets (the request's fails unless ``durable``)."""

    def __init__(self, durable: bool) -> None:
        super().__init__()
        self.durable = durable

    def on_request(self, request: Request, principal: TokenInfo | None) -> _Ticket:  # type: ignore[override]
        super().on_request(request, principal)
        return _Ticket(self.durable)

    def on_response(  # type: ignore[override]
        self,
        request: Request,
        principal: TokenInfo | None,
        status: int,
        code: str | None,
        version: int | None = None,
    ) -> _Ticket:
        super().on_response(request, principal, status, code)
        return _Ticket(True)


def _put(root: str, user: str) -> Request:
    return Request(
        method="PUT", route="secrets.write", path=P, token=root, body={"fields": {"username": user}}
    )


def test_admit_runs_nothing_until_run_and_run_records_the_response(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    audit = TicketRecorder(durable=True)
    core = Core(store, tokens, audit=audit)
    admitted = core.admit(_put(root, "a_user"))
    assert audit.events == [("request", "secrets.write", True)]
    with pytest.raises(NotFoundError):
        store.secrets.versions(P)  # admitted, not run
    asyncio.run(admitted.wait_async())
    response = admitted.run(defer_audit=True)
    assert response.status == 200 and response.audit is not None
    assert [v.number for v in store.secrets.versions(P)] == [1]
    assert audit.events[-1] == ("response", "secrets.write", 200, None)


def test_a_request_record_that_is_not_durable_refuses_the_change(
    store: SecretStore, tokens: TokenStore, root: str
) -> None:
    audit = TicketRecorder(durable=False)
    core = Core(store, tokens, audit=audit)
    admitted = core.admit(_put(root, "a_user"))
    with pytest.raises(AuditFailure):
        asyncio.run(admitted.wait_async())
    assert audit.events[-1] == ("response", "secrets.write", 503, AuditFailure.code)
    with pytest.raises(AuditFailure):
        core.handle(_put(root, "b_user"))  # the blocking path refuses the same way
    assert audit.events[-1] == ("response", "secrets.write", 503, AuditFailure.code)
    with pytest.raises(NotFoundError):
        store.secrets.versions(P)  # nothing was written


def test_admit_audits_and_raises_an_unauthenticated_change(
    store: SecretStore, tokens: TokenStore
) -> None:
    audit = TicketRecorder(durable=True)
    core = Core(store, tokens, audit=audit)
    with pytest.raises(AuthenticationError):
        core.admit(_put("bad", "a_user"))
    assert audit.events == [
        ("request", "secrets.write", False),
        ("response", "secrets.write", 401, "unauthenticated"),
    ]


@pytest.mark.parametrize("raised", [AuditFailure("device gone"), KeyboardInterrupt()])
def test_a_route_that_raises_past_the_error_table_still_gets_its_response_record(
    store: SecretStore,
    tokens: TokenStore,
    root: str,
    raised: BaseException,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker holds a read's request record until its response: every request must get
    one, also when the route raises ``AuditFailure`` or something that is not an
    ``Exception``."""
    audit = Recorder()
    core = Core(store, tokens, audit=audit)
    spec = core.spec("GET", "sys.seal_status")
    assert spec is not None

    def boom(context: object, call: object) -> object:
        raise raised

    monkeypatch.setitem(
        core._routes,  # type: ignore[arg-type]
        ("GET", "sys.seal_status"),
        dataclasses.replace(spec, handler=boom),
    )
    with pytest.raises(type(raised)):
        core.handle(Request(method="GET", route="sys.seal_status", token=root))
    assert audit.events[-1] == ("response", "sys.seal_status", 503, "audit_failure")


@pytest.mark.parametrize("fail_on", ["request", "response"])
def test_a_failing_hook_is_logged_with_its_exception_type_not_its_text(
    store: SecretStore,
    tokens: TokenStore,
    root: str,
    caplog: pytest.LogCaptureFixture,
    fail_on: str,
) -> None:
    """A refusal for want of an audit record says why in the log (it was silent): the
    exception's type, never its text, which may quote what was being recorded."""
    core = Core(store, tokens, audit=Recorder(fail_on=fail_on))
    with caplog.at_level("ERROR", logger="medsecrets.audit"), pytest.raises(AuditFailure):
        core.handle(Request(method="GET", route="sys.health"))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"audit: recording the {fail_on} failed (OSError): request refused"]
    assert "disk full" not in caplog.text
