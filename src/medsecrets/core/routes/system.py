"""System routes: health, seal status, init, unseal, seal, keyring and KEK rotation, rekey
(and its verification and cancel), rewrap.

``health``, ``seal-status`` and ``unseal`` are open and served while sealed;
``init`` is open while the store is uninitialised. The rest need ``sudo`` on
``sys/<route>`` (so a token with ``*`` or ``sys/`` among its paths).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from medsecrets.core.routes.base import Call, Context, RouteSpec, parse_body, quote
from medsecrets.errors import InvalidRequest
from medsecrets.schema.keys import KeyRotation, KeyVersions, RewrapReport
from medsecrets.schema.seal import (
    AwsKmsSealConfig,
    InitResponse,
    InitResult,
    KeyFileSealConfig,
    RekeyCancel,
    SealConfig,
    SealStatus,
    ShamirSealConfig,
    seal_type,
)
from medsecrets.schema.system import Health, KeyringInfo
from medsecrets.sensitive import Sensitive

__all__ = [
    "AwsKmsSealBody",
    "InitBody",
    "KeyFileSealBody",
    "RekeyBody",
    "RekeyVerifyBody",
    "RewrapBody",
    "ShamirSealBody",
    "UnsealBody",
    "routes",
]


# -- bodies ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ShamirSealBody:
    """Split the unseal key into ``shares``; any ``threshold`` of them unseal."""

    type: Literal["shamir"]
    shares: int = 5
    threshold: int = 3


@dataclass(frozen=True, slots=True)
class KeyFileSealBody:
    """Keep the unseal key in a 0600 file on the server (auto-unseal); ``path`` is absolute."""

    type: Literal["keyfile"]
    path: str


@dataclass(frozen=True, slots=True)
class AwsKmsSealBody:
    """Encrypt the root key with an AWS KMS key (auto-unseal)."""

    type: Literal["awskms"]
    key_id: str
    region: str = "us-east-1"
    endpoint_url: str | None = None


@dataclass(frozen=True, slots=True)
class InitBody:
    """``POST /v1/sys/init``."""

    seal: ShamirSealBody | KeyFileSealBody | AwsKmsSealBody


_SEAL_BODIES: dict[str, type[ShamirSealBody] | type[KeyFileSealBody] | type[AwsKmsSealBody]] = {
    "shamir": ShamirSealBody,
    "keyfile": KeyFileSealBody,
    "awskms": AwsKmsSealBody,
}


def _parse_init(data: object) -> InitBody:
    if not isinstance(data, dict):
        raise InvalidRequest("body: expected a JSON object")
    for key in data:
        if key != "seal":
            raise InvalidRequest(f"body: unknown field {quote(str(key))}")
    seal = data.get("seal")
    if not isinstance(seal, dict):
        raise InvalidRequest("body.seal: expected an object")
    kind = seal.get("type")
    cls = _SEAL_BODIES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidRequest("body.seal.type: expected 'shamir', 'keyfile' or 'awskms'")
    body = InitBody(seal=parse_body(cls, seal, where="body.seal"))
    if isinstance(body.seal, KeyFileSealBody) and not os.path.isabs(body.seal.path):
        # recorded in the store as given: a relative path would name another file once the
        # server starts from another working directory (and the caller cannot know this one)
        raise InvalidRequest("body.seal.path: must be an absolute path on the server")
    return body


@dataclass(frozen=True, slots=True)
class UnsealBody:
    """``{"share": ...}`` adds a share, ``{"reset": true}`` forgets the shares given so far,
    ``{}`` auto-unseals a key-file or AWS KMS seal."""

    share: Sensitive[str] | None = None
    reset: bool = False


@dataclass(frozen=True, slots=True)
class RekeyBody:
    """``POST /v1/sys/rekey``: a threshold of the current shares and the new split."""

    shares: tuple[Sensitive[str], ...]
    new_shares: int = 5
    new_threshold: int = 3


@dataclass(frozen=True, slots=True)
class RekeyVerifyBody:
    """``POST /v1/sys/rekey/verify``: a threshold of the NEW shares of the pending rekey."""

    shares: tuple[Sensitive[str], ...]


@dataclass(frozen=True, slots=True)
class RewrapBody:
    """``POST /v1/sys/rewrap``: one page of at most ``limit`` secrets after ``after``."""

    after: str = ""
    limit: int = 100


# -- handlers ------------------------------------------------------------------------------
def health(ctx: Context, call: Call) -> Health:
    status = ctx.store.status()
    return Health(
        initialized=status.initialized,
        sealed=status.sealed,
        version=ctx.version,
        server_time=ctx.clock.now(),
    )


def seal_status(ctx: Context, call: Call) -> SealStatus:
    return ctx.store.status()


def _seal_config(body: ShamirSealBody | KeyFileSealBody | AwsKmsSealBody) -> SealConfig:
    if isinstance(body, ShamirSealBody):
        return ShamirSealConfig(shares=body.shares, threshold=body.threshold)
    if isinstance(body, KeyFileSealBody):
        return KeyFileSealConfig(path=body.path)
    return AwsKmsSealConfig(key_id=body.key_id, region=body.region, endpoint_url=body.endpoint_url)


def init(ctx: Context, call: Call) -> InitResponse:
    assert isinstance(call.body, InitBody)
    config = _seal_config(call.body.seal)
    if ctx.seal_type is not None and seal_type(config) != ctx.seal_type:
        raise InvalidRequest(
            f"body.seal.type: this server is configured for a {ctx.seal_type} seal "
            f"(setting seal.type); initialised with a {seal_type(config)} seal it would not "
            "start again"
        )
    result = ctx.store.initialize(config)
    token, _ = ctx.tokens.create_root()
    return InitResponse(
        shares=result.shares,
        threshold=result.threshold,
        seal_type=result.seal_type,
        root_token=token,
    )


def unseal(ctx: Context, call: Call) -> SealStatus:
    body = call.body
    assert isinstance(body, UnsealBody)
    if body.reset:
        if body.share is not None:
            raise InvalidRequest("body: give either share or reset, not both")
        return ctx.store.seal_manager.reset_unseal()
    if body.share is None:
        return ctx.store.auto_unseal()
    return ctx.store.unseal(body.share)


def seal(ctx: Context, call: Call) -> SealStatus:
    status = ctx.store.seal(by_operator=True)
    ctx.tokens.forget()
    return status


def rotate(ctx: Context, call: Call) -> KeyringInfo:
    return ctx.store.rotate()


def rekey(ctx: Context, call: Call) -> InitResult:
    body = call.body
    assert isinstance(body, RekeyBody)
    return ctx.store.rekey(body.shares, shares=body.new_shares, threshold=body.new_threshold)


def rekey_verify(ctx: Context, call: Call) -> SealStatus:
    body = call.body
    assert isinstance(body, RekeyVerifyBody)
    return ctx.store.rekey_verify(body.shares)


def rekey_cancel(ctx: Context, call: Call) -> RekeyCancel:
    return RekeyCancel(cancelled=ctx.store.rekey_cancel())


def keys(ctx: Context, call: Call) -> KeyVersions:
    return KeyVersions(category=call.path, versions=ctx.store.key_versions(call.path))


def rotate_key(ctx: Context, call: Call) -> KeyRotation:
    return KeyRotation(category=call.path, version=ctx.store.rotate_key(call.path))


def rewrap(ctx: Context, call: Call) -> RewrapReport:
    """One page of the (resumable) rewrap pass."""
    body = call.body
    assert isinstance(body, RewrapBody)
    if not 1 <= body.limit <= 1000:
        raise InvalidRequest("body.limit: must be from 1 to 1000")
    return ctx.store.rewrap(after=body.after, limit=body.limit)


def _sys(name: str) -> str:
    return f"sys/{name}"


def routes() -> tuple[RouteSpec, ...]:
    """The system route specs."""
    return (
        RouteSpec(
            name="sys.health",
            method="GET",
            url="/v1/sys/health",
            handler=health,
            summary="Liveness, initialisation and seal state (open, also while sealed)",
            open=True,
            sealed_ok=True,
            response=Health,
            statuses=(),
        ),
        RouteSpec(
            name="sys.seal_status",
            method="GET",
            url="/v1/sys/seal-status",
            handler=seal_status,
            summary="Seal status (open, also while sealed)",
            open=True,
            sealed_ok=True,
            response=SealStatus,
            statuses=(),
        ),
        RouteSpec(
            name="sys.init",
            method="POST",
            url="/v1/sys/init",
            handler=init,
            summary="Initialise the store; returns the unseal shares and a root token once",
            open=True,
            body=InitBody,
            body_required=True,
            parser=_parse_init,
            response=InitResponse,
            returns_secret=True,
            statuses=(409, 502),  # initialised already; a KMS seal's key unreachable
        ),
        RouteSpec(
            name="sys.unseal",
            method="POST",
            url="/v1/sys/unseal",
            handler=unseal,
            summary="Submit an unseal share, reset progress, or auto-unseal ({})",
            open=True,
            sealed_ok=True,
            body=UnsealBody,
            response=SealStatus,
            statuses=(403, 502),  # auto-unseal after an operator's seal; KMS unreachable
        ),
        RouteSpec(
            name="sys.seal",
            method="POST",
            url="/v1/sys/seal",
            handler=seal,
            summary="Seal the store (drop every reference to key material)",
            capability="sudo",
            authz_path=lambda call: _sys("seal"),
            response=SealStatus,
            statuses=(),
        ),
        RouteSpec(
            name="sys.rotate",
            method="POST",
            url="/v1/sys/rotate",
            handler=rotate,
            summary="Add a keyring term (the barrier key)",
            capability="sudo",
            authz_path=lambda call: _sys("rotate"),
            response=KeyringInfo,
            statuses=(409,),  # the keyring changed concurrently
        ),
        RouteSpec(
            name="sys.rekey",
            method="POST",
            url="/v1/sys/rekey",
            handler=rekey,
            summary="New Shamir unseal shares, pending until verified (the current ones "
            "keep working)",
            capability="sudo",
            authz_path=lambda call: _sys("rekey"),
            body=RekeyBody,
            body_required=True,
            response=InitResult,
            returns_secret=True,
            statuses=(409,),  # the seal changed concurrently
        ),
        RouteSpec(
            name="sys.rekey.verify",
            method="POST",
            url="/v1/sys/rekey/verify",
            handler=rekey_verify,
            summary="Make the pending rekey take effect, given a threshold of its new shares "
            "(400 when none is pending)",
            capability="sudo",
            authz_path=lambda call: _sys("rekey"),
            body=RekeyVerifyBody,
            body_required=True,
            response=SealStatus,
            statuses=(409,),  # the seal changed concurrently
        ),
        RouteSpec(
            name="sys.rekey.cancel",
            method="DELETE",
            url="/v1/sys/rekey",
            handler=rekey_cancel,
            summary="Drop a pending rekey (idempotent; the current shares are untouched)",
            capability="sudo",
            authz_path=lambda call: _sys("rekey"),
            response=RekeyCancel,
            statuses=(409,),  # the pending rekey kept changing (other nodes) while read
        ),
        RouteSpec(
            name="sys.keys.read",
            method="GET",
            url="/v1/sys/keys/{category}",
            handler=keys,
            summary="The KEK versions of a category",
            capability="sudo",
            authz_path=lambda call: _sys(f"keys/{call.path}"),
            response=KeyVersions,
            statuses=(502,),  # an aws-kms category without a KMS client
        ),
        RouteSpec(
            name="sys.keys.rotate",
            method="POST",
            url="/v1/sys/keys/{category}/rotate",
            handler=rotate_key,
            summary="Add a KEK version for a category",
            capability="sudo",
            authz_path=lambda call: _sys(f"keys/{call.path}"),
            response=KeyRotation,
            statuses=(409, 502),
        ),
        RouteSpec(
            name="sys.rewrap",
            method="POST",
            url="/v1/sys/rewrap",
            handler=rewrap,
            summary="Re-wrap one page of data keys under the newest KEKs (resumable)",
            capability="sudo",
            authz_path=lambda call: _sys("rewrap"),
            body=RewrapBody,
            response=RewrapReport,
            statuses=(409, 502),  # a secret changing too fast; KMS
        ),
    )
